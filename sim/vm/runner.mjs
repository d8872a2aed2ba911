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
// The package does not export its wasm memory; catch the instance as Emscripten instantiates it.
let wasmExports = null;
const realInstantiate = WebAssembly.instantiate;
WebAssembly.instantiate = async function (...args) {
  const r = await realInstantiate.apply(this, args);
  wasmExports = (r.instance || r).exports;
  return r;
};
const { loadMicroPython } = await import(pathToFileURL(cfg.micropython).href);
const PYSTACK_WORDS = cfg.pystack || 2048;
let mp;
try {
  mp = await loadMicroPython({
    heapsize: cfg.heap,
    pystack: PYSTACK_WORDS,
    linebuffer: false,
    stdout: onStdout,
    stderr: onStdout,
  });
} finally {
  WebAssembly.instantiate = realInstantiate;
}
const FS = mp.FS;

// -- live heap: what gc.collect() would leave, measured from outside ---------------------------------
// WHY gc.collect() FREES NOTHING IN THIS VM (root cause, in the npm package's C, not in our shims):
// the WebAssembly port is built with MICROPY_GC_SPLIT_HEAP_AUTO, and its ports/webassembly/main.c
// then defines gc_collect() as "gc_collect_pending = true" and nothing else. The collection itself
// (gc_collect_top_level: gc_collect_start + gc_collect_end, no stack scan) only runs when
// external_call_depth drops back to 0, i.e. when the outermost JS -> wasm call (runPython,
// replProcessChar, pyimport) returns. The reason is sound: compiled C keeps object pointers in wasm
// locals, which live outside linear memory where no conservative scan can see them, so collecting
// while C frames are active could free live objects. Meanwhile a failed allocation makes the heap
// grow (split heap) instead of collecting. The whole boot (_boot.main(): boot.py, main.py) runs
// inside ONE runPython call, so during a run nothing is ever freed: gc.collect() is a no-op,
// gc.mem_alloc()/mem_info() count every allocation since start (the 300-list loop's 9.6 KB, the
// 64-160 B of JSON strings, dicts and JsProxy objects each host call allocates), and the heap
// grows with run length. (At the serial REPL each typed character is one top-level call, so there
// the pending collection does run between statements.) Host calls do not leak: no JS-side proxy
// table keeps Python objects (only strings and ints cross), what they allocate is garbage the
// deferred collection frees (checked at the top level), and the live figure below stays flat
// over 1200 host calls.
// The pending collection cannot be triggered from JS during a host call without the same hazard,
// the wasm has no name section and exports no GC entry point, and rebuilding the package is out
// of scope; so gc.collect() stays as the package made it, and the VM's heap is measured instead:
//
// liveHeap() marks, read-only, the GC heap from the roots a board's gc.collect() scans: the
// MicroPython state (mp_state_ctx: module dicts, sys.modules, root pointers), the Python stack up
// to its current top, and the live part of the C (Emscripten shadow) stack, conservatively, with
// MicroPython's own rules (a root is a block-aligned pointer to a HEAD block of the ATB; an
// object's blocks are HEAD + TAIL*, all words scanned). Nothing in the VM is modified. Checked
// against the real collection at the top level: equal to the byte. What it cannot see are pointers
// held only in wasm locals of the C frames below the host call (a few transient objects of the
// statement being executed: a slight underestimate, bounded by what that statement holds).
// Layout (MicroPython 1.27, 32-bit wasm): 16-byte blocks, 2 ATB bits per block (0 free, 1 head,
// 2 tail); mp_state_mem_area_t = {next, atb_start, atb_len, ftb_start, pool_start, pool_end, ...},
// the first one inside mp_state_ctx, the others at the start of each region the heap grew by;
// mp_state_thread_t holds {pystack_start, pystack_end, pystack_cur}. Both are found by value
// after start-up (the heap size and the Python stack size are known); if either is not found
// (another package version), the live figures are reported as null instead of guessed.
function makeHeapProbe(ex, heapBytes, pystackWords) {
  if (!ex || !ex.memory || !ex.emscripten_stack_get_base || !ex.emscripten_stack_get_current) return null;
  const STACK_TOP = ex.emscripten_stack_get_base(); // the shadow stack grows down from here
  let m = new Uint32Array(ex.memory.buffer);
  let areaAddr = 0;
  let pyAddr = 0;
  for (let i = STACK_TOP >> 2; i < m.length - 8 && !(areaAddr && pyAddr); i++) {
    if (!areaAddr) {
      const atb = m[i], len = m[i + 1], ps = m[i + 3], pe = m[i + 4];
      if (atb && !(atb & 3) && !(ps & 15) && pe > ps && atb + len <= ps && ps - atb <= 2 * len + 4096
          && pe - atb <= heapBytes && pe - atb >= heapBytes - 4096 && m[i - 1] === 0) areaAddr = (i - 1) * 4;
    }
    if (!pyAddr) {
      const s = m[i], e = m[i + 1], c = m[i + 2];
      if (s && e - s === pystackWords * 4 && c >= s && c <= e) pyAddr = i * 4;
    }
  }
  if (!areaAddr || !pyAddr || Math.abs(areaAddr - pyAddr) > 4096) return null;
  // mp_state_ctx is {thread, vm, mem}: the pystack fields are in thread, the first area in mem.
  const rootLo = Math.max(STACK_TOP, Math.min(areaAddr, pyAddr) - 256);
  const rootHi = Math.max(areaAddr, pyAddr) + 256;

  const USED_IN_BYTE = new Uint8Array(256); // ATB byte -> blocks in use among its four
  for (let v = 0; v < 256; v++) for (let k = 0; k < 8; k += 2) if ((v >> k) & 3) USED_IN_BYTE[v]++;

  function areas() {
    m = new Uint32Array(ex.memory.buffer); // a new view: memory.grow() detaches the old buffer
    const out = [];
    for (let a = areaAddr; a; a = m[a >> 2]) {
      const w = a >> 2;
      out.push({ atb: m[w + 1], ps: m[w + 4], pe: m[w + 5], n: (m[w + 5] - m[w + 4]) >> 4, marks: null });
      if (out.length > 4096) return null; // not a list of areas after all
    }
    return out;
  }

  // Bytes in use (the VM's gc.mem_alloc()) and the heap's size: cheap, a table look-up per 4 blocks.
  function usedHeap(as) {
    const u8 = new Uint8Array(ex.memory.buffer);
    let used = 0, total = 0;
    for (const a of as) {
      const nb = a.n >> 2;
      for (let i = 0; i < nb; i++) used += USED_IN_BYTE[u8[a.atb + i]];
      for (let b = nb << 2; b < a.n; b++) if ((u8[a.atb + (b >> 2)] >> ((b & 3) << 1)) & 3) used++;
      total += a.n;
    }
    return { used: used * 16, total: total * 16 };
  }

  // Bytes of the objects reachable now (the mark phase of a collection, without the sweep).
  function liveHeap(as) {
    const u8 = new Uint8Array(ex.memory.buffer);
    let lo = Infinity, hi = 0;
    for (const a of as) { lo = Math.min(lo, a.ps); hi = Math.max(hi, a.pe); a.marks = new Uint8Array(a.n); }
    const todoA = [], todoB = [];
    const consider = (p) => {
      if (p < lo || p >= hi || (p & 15)) return;
      for (let k = 0; k < as.length; k++) {
        const a = as[k];
        if (p < a.ps || p >= a.pe) continue;
        const b = (p - a.ps) >> 4;
        if (((u8[a.atb + (b >> 2)] >> ((b & 3) << 1)) & 3) === 1 && !a.marks[b]) {
          a.marks[b] = 1; todoA.push(k); todoB.push(b);
        }
        return;
      }
    };
    const scan = (from, to, skipFrom, skipTo) => {
      for (let i = from >> 2; i < to >> 2; i++) if (i < skipFrom || i >= skipTo) consider(m[i]);
    };
    const skip = areaAddr >> 2; // the area record itself: its pool_start would look like a root
    scan(rootLo, rootHi, skip, skip + 8);
    scan(m[pyAddr >> 2], m[(pyAddr >> 2) + 2], 0, 0);
    scan(ex.emscripten_stack_get_current(), STACK_TOP, 0, 0);
    let live = 0;
    while (todoA.length) {
      const a = as[todoA.pop()];
      let b = todoB.pop();
      do {
        live++;
        const w = (a.ps >> 2) + (b << 2);
        consider(m[w]); consider(m[w + 1]); consider(m[w + 2]); consider(m[w + 3]);
        b++;
      } while (b < a.n && ((u8[a.atb + (b >> 2)] >> ((b & 3) << 1)) & 3) === 2);
    }
    return live * 16;
  }

  // The peak: live can only grow by allocating, and nothing is freed during a run but by explicit
  // gc_free (realloc, of memory its owner holds), so live now <= live at the last mark + growth of
  // `used` since. A sample marks only when that bound passes the peak by more than PEAK_SLACK
  // bytes: the peak is exact to PEAK_SLACK (plus what an explicit free let be reused unseen), and
  // a steady program costs a mark every few host calls (about 0.1 ms per host call on average).
  // Between two host calls nothing is sampled: a temporary that is made and dropped with no host
  // call in between (e.g. a parse tree while importing a .py) is not in the peak.
  const PEAK_SLACK = 256;
  let peak = null, lastLive = 0, lastUsed = 0;
  function sample(force) {
    const as = areas();
    if (as === null) return null;
    const h = usedHeap(as);
    if (force || peak === null || h.used < lastUsed || lastLive + (h.used - lastUsed) > peak + PEAK_SLACK) {
      lastLive = liveHeap(as);
      lastUsed = h.used;
      if (peak === null || lastLive > peak) peak = lastLive;
      h.live = lastLive;
    } else {
      h.live = null; // not marked: at most peak + PEAK_SLACK
    }
    h.peak = peak;
    return h;
  }
  // Back at the top level (the REPL between two characters), where the package collects for real:
  // if it did (less in use than at the last mark), all that is left in use is live.
  function topLevel() {
    const as = areas();
    if (as === null || peak === null) return;
    const h = usedHeap(as);
    if (h.used < lastUsed) {
      lastLive = lastUsed = h.used;
      if (lastLive > peak) peak = lastLive;
    }
  }
  function resetPeak() {
    const h = sample(true);
    if (h !== null) peak = h.peak = h.live;
    return h;
  }
  return { sample, resetPeak, topLevel };
}

// A measurement must never break a run: if the probe fails, it is switched off (figures null).
let heapProbe = null;
try { heapProbe = makeHeapProbe(wasmExports, cfg.heap, PYSTACK_WORDS); } catch { heapProbe = null; }
function heapDo(fn) {
  if (heapProbe === null) return null;
  try {
    return fn(heapProbe);
  } catch (e) {
    heapProbe = null;
    writeAll(2, Buffer.from(`runner: heap probe switched off: ${e && e.stack ? e.stack : e}\n`));
    return null;
  }
}
const NO_HEAP = JSON.stringify({ live: null, peak: null, used: null, total: null });

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

// -- CPU time of the program itself (bench.energy): this process's CPU time since the VM started
// running Python, minus what the harness takes outside the VM (host calls with their heap probe,
// console and flash sync; the AES shim, a hardware engine on a board). CPU time, not wall time,
// so other processes on the host do not count.
let harnessCpuUs = 0;
let cpuStartUs = null;
let hostCalls = 0; // each costs the program its shim's Python (JSON): bench.node_cpu subtracts it
function cpuNowUs() {
  const u = process.cpuUsage();
  return u.user + u.system;
}
function harness(fn) {
  const c0 = cpuNowUs();
  try {
    return fn();
  } finally {
    harnessCpuUs += cpuNowUs() - c0;
  }
}

// One request to the host, answered synchronously (console and flash are brought up to date first).
function hostCall(req) {
  hostCalls++;
  return harness(() => {
    heapDo((p) => p.sample(false)); // the peak, sampled at every host call
    flushConsole();
    syncFlash();
    writeAll(reqFd, Buffer.from(outBytes + " " + req + "\n"));
    return readLine(repFd);
  });
}

mp.registerJsModule("_host", {
  cfg: vmCfg,
  call: hostCall,
  // The heap now, as JSON {"live", "peak", "used", "total"} (bytes; null: not measurable);
  // heap(1) also restarts the peak from the live figure now.
  heap(reset) {
    const h = harness(() => heapDo((p) => (reset ? p.resetPeak() : p.sample(true))));
    return h === null ? NO_HEAP : JSON.stringify(h);
  },
  // Microseconds of CPU the Python program has used so far (see harness() above).
  cpu_us() {
    return cpuStartUs === null ? 0 : cpuNowUs() - cpuStartUs - harnessCpuUs;
  },
  host_calls() {
    return hostCalls;
  },
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
    return harness(() => aes(mode, keyHex, ivHex, dataHex, encrypt));
  },
});

function aes(mode, keyHex, ivHex, dataHex, encrypt) {
  const key = Buffer.from(keyHex, "hex");
  const algo = `aes-${key.length * 8}-${mode}`;
  const iv = mode === "ecb" ? null : Buffer.from(ivHex, "hex");
  const c = encrypt ? crypto.createCipheriv(algo, key, iv) : crypto.createDecipheriv(algo, key, iv);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(Buffer.from(dataHex, "hex")), c.final()]).toString("hex");
}

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
      const done = mp.replProcessChar(c);
      heapDo((p) => p.topLevel());
      if (done) {
        onStdout(Buffer.from("MPY: soft reboot\n"));
        hostCall('{"op":"reset","kind":"soft"}');
        return;
      }
    }
  }
}

let status = 0;
try {
  cpuStartUs = cpuNowUs();
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
