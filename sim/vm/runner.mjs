// One virtual MicroPython board: the real MicroPython VM (WebAssembly port) under Node.js.
//
// Started by sim/vm/board.py as
//     node runner.mjs <request-fd> <reply-fd> <host-pid>
// with two pipes inherited from the host:
//   * request pipe (VM -> host): one line per request, "<console-bytes> <json>\n", where
//     <console-bytes> counts every byte this process has written to stdout so far, so the host can
//     order console lines before the request that follows them;
//   * reply pipe (host -> VM): the first line is the boot configuration (JSON), then one reply
//     line (JSON) per request, read synchronously with fs.readSync: MicroPython code calling
//     spi.write_readinto() must get its bytes back before the next bytecode runs.
// Console output (print, tracebacks) goes to stdout; Node-level errors go to stderr.
//
// Flash: the host folder cfg.flash is copied into the MEMFS root "/" at boot. Before every request
// and at an orderly exit, changed files are written back (temp file + rename, so a host-side kill
// never leaves a torn file) and removed files are deleted. A power cut between a write and the next
// request loses that write, like an unflushed flash page. A file still open for writing keeps its
// previous version in flash until it is closed, as LittleFS (the boards' filesystem) does.

import fs from "node:fs";
import path from "node:path";
import crypto from "node:crypto";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";

const reqFd = Number(process.argv[2]);
const repFd = Number(process.argv[3]);
const hostPid = Number(process.argv[4] || 0);

// Never outlive the host: a VM stuck in a busy loop cannot notice a closed pipe, so a small worker
// thread checks the parent pid and kills this process when the host is gone.
if (hostPid > 0) {
  const watchdog = new Worker(
    `const { workerData } = require("node:worker_threads");
     setInterval(() => { if (process.ppid !== workerData) process.kill(process.pid, "SIGKILL"); }, 250);`,
    { eval: true, workerData: hostPid },
  );
  watchdog.unref();
}

// -- synchronous pipe I/O ------------------------------------------------------------------------
const sleeper = new Int32Array(new SharedArrayBuffer(4));

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code === "EAGAIN") { Atomics.wait(sleeper, 0, 0, 1); continue; }
      if (e.code === "EPIPE") process.exit(0); // the host is gone
      throw e;
    }
  }
}

const rbuf = Buffer.alloc(1 << 16);
let pending = Buffer.alloc(0);

function readLine(fd) {
  for (;;) {
    const nl = pending.indexOf(10);
    if (nl >= 0) {
      const line = pending.toString("utf8", 0, nl);
      pending = pending.subarray(nl + 1);
      return line;
    }
    let n;
    try {
      n = fs.readSync(fd, rbuf, 0, rbuf.length, null);
    } catch (e) {
      if (e.code === "EAGAIN") { Atomics.wait(sleeper, 0, 0, 1); continue; }
      if (e.code === "EOF") n = 0; else throw e;
    }
    if (n === 0) process.exit(0); // the host closed the reply pipe: power is off
    pending = pending.length ? Buffer.concat([pending, rbuf.subarray(0, n)]) : Buffer.from(rbuf.subarray(0, n));
  }
}

const cfg = JSON.parse(readLine(repFd));

// -- console -------------------------------------------------------------------------------------
let outBytes = 0; // bytes written to fd 1 so far
let lineBuf = [];
let capture = null; // array of bytes while _host.capture(1) is on

function flushConsole() {
  if (lineBuf.length === 0) return;
  const b = Buffer.from(lineBuf);
  lineBuf = [];
  writeAll(1, b);
  outBytes += b.length;
}

function onStdout(chunk) {
  for (const c of chunk) {
    if (capture !== null) { capture.push(c); continue; }
    lineBuf.push(c);
    if (c === 10 || lineBuf.length >= 4096) flushConsole();
  }
}

// -- the VM --------------------------------------------------------------------------------------
const { loadMicroPython } = await import(pathToFileURL(cfg.micropython).href);
const mp = await loadMicroPython({
  heapsize: cfg.heap,
  pystack: cfg.pystack || 2048,
  linebuffer: false,
  stdout: onStdout,
  stderr: onStdout,
});
const FS = mp.FS;

// -- filesystem: harness folders and flash -------------------------------------------------------
const RESERVED = new Set(["dev", "proc"]); // Emscripten's own; never flash

function rmTree(p) {
  let st;
  try { st = FS.lstat(p); } catch { return; }
  if (FS.isDir(st.mode)) {
    for (const name of FS.readdir(p)) if (name !== "." && name !== "..") rmTree(p === "/" ? "/" + name : p + "/" + name);
    FS.rmdir(p);
  } else {
    FS.unlink(p);
  }
}

function isTempName(name) {
  return name.startsWith(".") && name.endsWith(".vm-sync");
}

function copyIn(hostDir, vmDir, opts) {
  if (vmDir !== "/") FS.mkdirTree(vmDir);
  for (const ent of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const name = ent.name;
    const hp = path.join(hostDir, name);
    if (isTempName(name)) { if (opts.flash) fs.rmSync(hp, { force: true }); continue; }
    if (opts.skip && (name === "__pycache__" || name.endsWith(".pyc"))) continue;
    const vp = vmDir === "/" ? "/" + name : vmDir + "/" + name;
    const st = ent.isSymbolicLink() ? fs.statSync(hp, { throwIfNoEntry: false }) : ent;
    if (!st) continue; // dangling link
    if (st.isDirectory()) copyIn(hp, vp, opts);
    else if (st.isFile()) FS.writeFile(vp, fs.readFileSync(hp));
  }
}

for (const d of ["/tmp", "/home"]) rmTree(d); // leave "/" to the flash
for (const [hostDir, vmDir] of cfg.mounts) {
  RESERVED.add(vmDir.split("/")[1]);
  copyIn(hostDir, vmDir, { skip: true });
}
if (cfg.flash) copyIn(cfg.flash, "/", { flash: true });

// What flash_dir holds, as this process last wrote or read it: path -> Buffer (files), dirs.
const synced = new Map();
const syncedDirs = new Set();

// Files in MEMFS under "/" (harness folders excepted). A file still open for writing is reported
// through `open` instead: like LittleFS, flash keeps its previous version until it is closed.
function walk(node, rel, files, dirs, writing, open) {
  for (const name of Object.keys(node.contents)) {
    if (rel === "" && RESERVED.has(name)) continue;
    const child = node.contents[name];
    const p = rel === "" ? name : rel + "/" + name;
    if (FS.isDir(child.mode)) { dirs.add(p); walk(child, p, files, dirs, writing, open); }
    else if (FS.isFile(child.mode)) {
      if (writing && writing.has(child)) open.add(p);
      else files.set(p, bytesOf(child.contents, child.usedBytes || 0));
    }
  }
}

function nodesOpenForWriting() {
  const nodes = new Set();
  for (const s of FS.streams) if (s && s.node && (s.flags & 3) !== 0) nodes.add(s.node);
  return nodes;
}

// A MEMFS file's bytes as a Uint8Array view (its array may be an Int8Array, or a plain Array).
function bytesOf(c, used) {
  if (!c) return new Uint8Array(0);
  if (ArrayBuffer.isView(c)) return new Uint8Array(c.buffer, c.byteOffset, Math.min(used, c.length));
  return Uint8Array.from(c.slice(0, used));
}

function sameBytes(a, b) {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

let dirty = true;

function syncFlash() {
  if (!cfg.flash || !dirty) return;
  dirty = false;
  const files = new Map();
  const dirs = new Set();
  const open = new Set();
  walk(FS.lookupPath("/").node, "", files, dirs, nodesOpenForWriting(), open);
  for (const p of open) {
    dirty = true; // sync again once it is closed
    if (synced.has(p)) files.set(p, synced.get(p));
  }
  for (const d of [...dirs].sort()) {
    if (!syncedDirs.has(d)) { fs.mkdirSync(path.join(cfg.flash, d), { recursive: true }); syncedDirs.add(d); }
  }
  for (const [p, data] of files) {
    const old = synced.get(p);
    if (old !== undefined && sameBytes(old, data)) continue;
    const dest = path.join(cfg.flash, p);
    const tmp = path.join(path.dirname(dest), "." + path.basename(dest) + ".vm-sync");
    const copy = Buffer.from(data); // MEMFS may grow the node's array in place later
    fs.writeFileSync(tmp, copy);
    fs.renameSync(tmp, dest);
    synced.set(p, copy);
  }
  for (const p of [...synced.keys()]) {
    if (!files.has(p)) { fs.rmSync(path.join(cfg.flash, p), { force: true }); synced.delete(p); }
  }
  for (const d of [...syncedDirs].sort().reverse()) {
    if (!dirs.has(d)) { fs.rmSync(path.join(cfg.flash, d), { recursive: true, force: true }); syncedDirs.delete(d); }
  }
}

if (cfg.flash) {
  // The state just copied in is what flash holds.
  const files = new Map();
  walk(FS.lookupPath("/").node, "", files, syncedDirs, null, null);
  for (const [p, data] of files) synced.set(p, Buffer.from(data));
  dirty = false;
  // Mark the flash dirty on every filesystem mutation, so requests cost nothing when it is clean.
  const mark = (name, test) => {
    const orig = FS[name];
    FS[name] = function (...args) {
      if (!test || test(...args)) dirty = true;
      return orig.apply(this, args);
    };
  };
  mark("write", (stream) => stream && stream.node && FS.isFile(stream.node.mode));
  mark("open", (p, flags) => typeof flags !== "number" || (flags & 0x243) !== 0); // O_WRONLY|O_RDWR|O_CREAT|O_TRUNC
  for (const name of ["close", "mknod", "mkdir", "unlink", "rmdir", "rename", "truncate", "ftruncate", "symlink", "msync"]) mark(name);
}

// -- the modules the shims reach -----------------------------------------------------------------
const vmCfg = JSON.stringify(cfg.vm);

// One request to the host, answered synchronously (console and flash are brought up to date first).
function hostCall(req) {
  flushConsole();
  syncFlash();
  writeAll(reqFd, Buffer.from(outBytes + " " + req + "\n"));
  return readLine(repFd);
}

mp.registerJsModule("_host", {
  cfg: vmCfg,
  call: hostCall,
  capture(on) {
    if (on) { capture = []; return ""; }
    const text = Buffer.from(capture || []).toString("utf8");
    capture = null;
    return text;
  },
});

mp.registerJsModule("_aes", {
  // AES on hex strings; mode "ecb" or "cbc"; iv "" for ECB. No padding: callers pass whole blocks.
  run(mode, keyHex, ivHex, dataHex, encrypt) {
    const key = Buffer.from(keyHex, "hex");
    const algo = `aes-${key.length * 8}-${mode}`;
    const iv = mode === "ecb" ? null : Buffer.from(ivHex, "hex");
    const c = encrypt ? crypto.createCipheriv(algo, key, iv) : crypto.createDecipheriv(algo, key, iv);
    c.setAutoPadding(false);
    return Buffer.concat([c.update(Buffer.from(dataHex, "hex")), c.final()]).toString("hex");
  },
});

// -- run -------------------------------------------------------------------------------------------
// A board on a serial port (cfg.vm.repl) stays at the REPL after main.py: the host hands it the bytes
// typed on the port ("repl_in"); Ctrl-D on an empty line is a soft reset, i.e. a new VM process.
// cfg.vm.raw: the board was soft-reset from the raw REPL, where it comes back (main.py skipped).
function repl() {
  if (cfg.vm.raw) {
    capture = [];
    mp.replInit(); // its friendly banner is not what a board in raw mode prints
    capture = null;
    mp.replProcessChar(1);
  } else {
    mp.replInit();
  }
  for (;;) {
    const input = JSON.parse(hostCall('{"op":"repl_in"}'));
    if (input.d === undefined) return; // the host is ending this VM
    for (const c of Buffer.from(input.d, "hex")) {
      if (mp.replProcessChar(c)) {
        onStdout(Buffer.from("MPY: soft reboot\n"));
        hostCall('{"op":"reset","kind":"soft"}');
        return;
      }
    }
  }
}

let status = 0;
try {
  mp.runPython("import sys\nsys.path.insert(0, '/_vm')\nimport _boot\n_boot.main()\n");
  if (cfg.vm.repl) repl();
} catch (e) {
  // _boot reports every Python exception itself; reaching here means the harness broke.
  flushConsole();
  writeAll(2, Buffer.from(`runner: ${e && e.stack ? e.stack : e}\n`));
  status = 70;
}
flushConsole();
dirty = true;
syncFlash();
process.exit(status);
