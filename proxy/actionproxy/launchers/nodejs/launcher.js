'use strict';
/*
 * actionproxy Node.js launcher: runs user functions for the proxy over action-loop protocol v2
 * (docs/PROTOCOL.md has the wire format).
 *
 * 1. stem cell: start with Node's own modules only, write the ack line
 *    `{"ok": true, "protocol": 2}` on fd 3, wait for an INIT frame on stdin;
 * 2. load the user's code (env exported first, cwd = the action folder) and answer INIT_DONE,
 *    always in async mode: Node is one event loop, every activation runs in this process;
 * 3. RUN frames start activations, CANCEL frames give them up; results go back as frames.
 *
 * Each activation is an AsyncLocalStorage store: process.env reads its `__OW_*` values, and
 * what it writes to process.stdout/process.stderr (console.* included) is sent as log frames
 * with its id. Output outside any activation goes to fd 1/2 as is.
 * Plain Node, CommonJS, no dependencies.
 */

const fs = require('fs');
const path = require('path');
const util = require('util');
const vm = require('vm');
const Module = require('module');
const { pathToFileURL } = require('url');
const { AsyncLocalStorage } = require('async_hooks');
const { isAscii } = require('buffer');

const RESULTS_FD = 3;
const HEADER_SIZE = 9;
const INIT = 0x49, RUN = 0x52, CANCEL = 0x43;
const INIT_DONE = 0x4b, DONE = 0x44, FAILED = 0x58, STDOUT = 0x4f, STDERR = 0x45, CHUNK = 0x53;
const LOG_FLUSH_BYTES = 64 * 1024;
const IOV_MAX = 1024; // buffers one writev takes (Linux)
const LARGE = 64 * 1024; // a payload from which buffers are reused rather than allocated
const READ_BUFFER = 256 * 1024; // the frame reader's buffer to begin with
const REUSED_MAX = 16 * 1024 * 1024; // a reused buffer is not kept past this size
const CANCELLED = Buffer.from('{"reason":"cancelled"}');
const BAD_RESULT = Buffer.from('{"reason":"result"}');
const ZIP_WITHOUT_ENTRY = 'Zipped actions must contain either package.json or index.js at the root.';

const realExit = process.exit.bind(process);
const current = new AsyncLocalStorage();
const running = new Map(); // id -> Activation, until its DONE or FAILED is sent

// ---------------------------------------------------------------- frames out (fd 3)

const outgoing = []; // frame bytes waiting for the next write, in order
let flushScheduled = false;
let dispatching = false; // inside a batch of frames read from stdin: more may finish soon
let blocked = false; // fd 3 said EAGAIN: wait, keep the order

function frame(kind, id, payload) {
  const header = Buffer.allocUnsafe(HEADER_SIZE);
  header.writeUInt8(kind, 0);
  header.writeUInt32BE(id, 1);
  header.writeUInt32BE(payload.length, 5);
  return [header, payload];
}

/** Queue frames; `now`: nothing else runs, so nothing would join a gathered write; `must`:
 * they hold the reused result buffer, so they leave before anything else is done. */
function send(parts, now, must = false) {
  for (const part of parts) outgoing.push(part);
  if (must || (now && !dispatching)) {
    flush();
  } else if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush); // every frame of this loop turn leaves in one write: one wake-up
  }
}

function flush() {
  flushScheduled = false;
  if (blocked || outgoing.length === 0) return;
  writeResults(outgoing.splice(0));
}

/** Writes the buffers in order, gathered (writev: a megabyte result is not copied on its way). */
function writeResults(parts) {
  let index = 0;
  while (index < parts.length) {
    let written;
    try {
      written = parts.length - index === 1 ? fs.writeSync(RESULTS_FD, parts[index])
        : fs.writevSync(RESULTS_FD, parts.slice(index, index + IOV_MAX));
    } catch (err) {
      if (err.code !== 'EAGAIN') realExit(1); // the proxy is gone: nobody reads our results
      const later = outgoing.splice(0); // what was queued meanwhile goes after, in order
      for (const part of parts.slice(index)) outgoing.push(Buffer.from(part)); // a copy: never a reused buffer
      for (const part of later) outgoing.push(part);
      blocked = true;
      setTimeout(unblock, 1); // fd 3 is normally blocking; this only guards a non-blocking one
      return;
    }
    while (index < parts.length && written >= parts[index].length) written -= parts[index++].length;
    if (written > 0) parts[index] = parts[index].subarray(written);
  }
}

function unblock() {
  blocked = false;
  flush();
}

// ---------------------------------------------------------------- frames in (stdin)

/** Reads frames from a stream of chunks into one buffer reused from frame to frame: a fresh
 * megabyte per large request would cost its page faults every time. A payload handed to
 * onFrame is a view of that buffer, valid during the call only. */
function frameReader(onFrame) {
  let buf = Buffer.allocUnsafe(READ_BUFFER);
  let start = 0; // [start, end) read, not yet a whole frame
  let end = 0;
  const room = (size) => { // the unread bytes moved to the front of a buffer of at least `size`
    const target = size > buf.length ? Buffer.allocUnsafe(size) : buf;
    buf.copy(target, 0, start, end);
    buf = target;
    end -= start;
    start = 0;
  };
  return (chunk) => {
    if (end + chunk.length > buf.length) room(end - start + chunk.length);
    end += chunk.copy(buf, end);
    while (end - start >= HEADER_SIZE) {
      const frameEnd = start + HEADER_SIZE + buf.readUInt32BE(start + 5);
      if (frameEnd > end) {
        if (frameEnd > buf.length) room(frameEnd - start); // the rest of it lands in place
        break;
      }
      onFrame(buf[start], buf.readUInt32BE(start + 1), buf.subarray(start + HEADER_SIZE, frameEnd));
      start = frameEnd;
    }
    if (start === end) {
      start = end = 0;
      if (buf.length > REUSED_MAX) buf = Buffer.allocUnsafe(READ_BUFFER); // not kept for one giant
    }
  };
}

// ---------------------------------------------------------------- activations

class Activation {
  constructor(id, env) {
    this.id = id;
    this.env = env; // `__OW_*` overlay; undefined marks a key deleted in this activation
    this.out = [];
    this.err = [];
    this.logBytes = 0;
    this.done = false;
    this.cancelled = false;
    this.controller = null; // made only if the action asks for its signal
  }

  get signal() {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.cancelled) this.controller.abort();
    }
    return this.controller.signal;
  }

  /** `lines`: this.out or this.err; `chunk`: a string or bytes, as stream.write takes them. */
  log(lines, chunk, encoding) {
    if (typeof chunk === 'string' && typeof encoding === 'string') chunk = Buffer.from(chunk, encoding);
    lines.push(chunk);
    this.logBytes += chunk.length;
    if (this.logBytes >= LOG_FLUSH_BYTES) send(this.logFrames(), false);
  }

  logFrames() {
    const parts = [];
    if (this.out.length) parts.push(...frame(STDOUT, this.id, joinLog(this.out)));
    if (this.err.length) parts.push(...frame(STDERR, this.id, joinLog(this.err)));
    this.out = [];
    this.err = [];
    this.logBytes = 0;
    return parts;
  }
}

function joinLog(parts) {
  return Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : part)));
}

/** Ends an activation: its logs, then its DONE or FAILED, exactly once (`reused`: the payload
 * is the reused result buffer, so it is written now). */
function finish(act, kind, payload, reused = false) {
  if (act.done) return;
  act.done = true;
  running.delete(act.id);
  send([...act.logFrames(), ...frame(kind, act.id, payload)], running.size === 0, reused);
}

let resultBuffer = Buffer.alloc(0);

/** A result's UTF-8 and whether it is in the buffer reused from one large result to the next
 * (encoding into memory already touched takes half the time a fresh Buffer takes: its page
 * faults). */
function resultBytes(json) {
  const worst = json.length * 3; // UTF-8 bytes for this many UTF-16 units, at most
  if (json.length < LARGE || worst > REUSED_MAX || blocked) return [Buffer.from(json), false];
  if (resultBuffer.length < worst) resultBuffer = Buffer.allocUnsafe(worst);
  return [resultBuffer.subarray(0, resultBuffer.utf8Write(json, 0)), true];
}

const TRACE_FIELDS = new Set(['traceparent', 'tracestate']);

/** `__OW_<KEY>` for every top-level key but `value`; non-strings as compact JSON; the trace
 * context (which the proxy always sends) also as TRACEPARENT and TRACESTATE. */
function contextEnv(request) {
  const env = Object.create(null);
  for (const [key, val] of Object.entries(request)) {
    if (key === 'value') continue;
    const text = typeof val === 'string' ? val : val === null ? '' : JSON.stringify(val);
    env['__OW_' + key.toUpperCase()] = text;
    if (TRACE_FIELDS.has(key)) env[key.toUpperCase()] = text;
  }
  return env;
}

/** UTF-8 to a string; ASCII (most JSON) as Latin-1, the same characters for a third of the cost. */
function decode(bytes) {
  return isAscii(bytes) ? bytes.toString('latin1') : bytes.toString('utf8');
}

function startActivation(id, payload, handler) {
  let request;
  try {
    request = JSON.parse(decode(payload));
    if (request === null || typeof request !== 'object' || Array.isArray(request)) {
      throw new TypeError('the request is not a JSON object');
    }
  } catch (err) {
    const act = new Activation(id, Object.create(null));
    running.set(id, act);
    return finish(act, DONE, Buffer.from(JSON.stringify({ error: `Bad request: ${err.message}` })));
  }
  const act = new Activation(id, contextEnv(request));
  running.set(id, act);
  const value = request.value === undefined ? {} : request.value;
  current.run(act, invoke, act, handler, value);
}

function invoke(act, handler, value) {
  let result;
  try {
    result = handler(value);
    if (isStream(result)) return stream(act, result);
    if (isThenable(result)) {
      Promise.resolve(result).then((r) => (isStream(r) ? stream(act, r) : report(act, succeed, r)),
        (e) => report(act, fail, e));
      return;
    }
  } catch (err) {
    return report(act, fail, err);
  }
  report(act, succeed, result);
}

/** An async iterable (an `async function*`) or a generator: a streamed result. */
function isStream(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x) &&
    (typeof x[Symbol.asyncIterator] === 'function' ||
     (typeof x[Symbol.iterator] === 'function' && typeof x.next === 'function'));
}

/** Each item a CHUNK frame (with the logs written before it); the empty object ends it. */
function stream(act, iterable) {
  (async () => {
    for await (const item of iterable) {
      if (act.done) break; // cancelled: `break` ends the generator too
      const json = JSON.stringify(item === undefined ? null : item);
      send([...act.logFrames(), ...frame(CHUNK, act.id, Buffer.from(json))], running.size <= 1);
    }
  })().then(() => report(act, succeed, {}), (e) => report(act, fail, e));
}

/** Reporting runs the user's code too (getters, toJSON, custom inspect): if that throws, the
 * activation fails alone instead of taking the launcher down. */
function report(act, outcome, value) {
  try {
    outcome(act, value);
  } catch {
    act.log(act.err, 'The action returned a value that cannot be reported: reading it threw an error\n');
    finish(act, FAILED, BAD_RESULT);
  }
}

function isThenable(x) {
  return x !== null && (typeof x === 'object' || typeof x === 'function') && typeof x.then === 'function';
}

function cancel(id) {
  const act = running.get(id);
  if (act === undefined) return;
  act.cancelled = true;
  if (act.controller !== null) current.run(act, () => act.controller.abort()); // listeners log as it
  finish(act, FAILED, CANCELLED);
}

// ---------------------------------------------------------------- results

function succeed(act, result) {
  if (act.done) return;
  if (result === undefined) result = {}; // a bare `return;`, as OpenWhisk's Node runtime
  if (result === null || typeof result !== 'object') {
    const type = result === null ? 'null' : typeof result;
    act.log(act.err, util.format(`Result must be of type object but has type "${type}":`, result) + '\n');
  }
  sendResult(act, result);
}

/** JSON of the result; the proxy answers 502 for anything but an object or array. */
function sendResult(act, result) {
  let json;
  try {
    json = JSON.stringify(result);
    if (json === undefined) throw new TypeError(`a ${typeof result} has no JSON form`);
  } catch (err) {
    act.log(act.err, `The action returned a result that cannot be serialized to JSON: ${err.message}\n`);
    return finish(act, FAILED, BAD_RESULT);
  }
  finish(act, DONE, ...resultBytes(json));
}

/** A throw or a rejection is an application error: 200 with `{"error": ...}`. */
function fail(act, err) {
  if (act.done) return;
  if (err instanceof ExitRequest) return exitActivation(err);
  act.log(act.err, (typeof err === 'string' ? err : util.inspect(err)) + '\n');
  sendResult(act, { error: err ? serializeError(err) : {} });
}

/** What OpenWhisk's Node runtime sends for errors (the serialize-error package). */
function serializeError(value) {
  if (typeof value === 'function') return `[Function: ${value.name || 'anonymous'}]`;
  if (value === null || typeof value !== 'object') return value;
  return copyWithoutCycles(value, [], true);
}

const ERROR_FIELDS = ['name', 'message', 'stack', 'code', 'cause'];

function copyWithoutCycles(from, seen, top) {
  if (typeof from.toJSON === 'function') return from.toJSON();
  const to = Array.isArray(from) ? [] : {};
  const chain = [...seen, from];
  for (const [key, val] of Object.entries(from)) {
    if (typeof val === 'function') continue;
    if (val === null || typeof val !== 'object') to[key] = val;
    else if (Buffer.isBuffer(val)) to[key] = '[object Buffer]';
    else if (typeof val.pipe === 'function') to[key] = '[object Stream]';
    else if (chain.includes(val)) to[key] = '[Circular]';
    else to[key] = copyWithoutCycles(val, chain, false);
  }
  if (top || isErrorLike(from)) {
    for (const field of ERROR_FIELDS) {
      const val = from[field];
      if (val !== undefined && val !== null) {
        to[field] = isErrorLike(val) ? copyWithoutCycles(val, chain, false) : val;
      }
    }
  }
  return to;
}

function isErrorLike(x) {
  return x !== null && typeof x === 'object' && 'name' in x && 'message' in x && 'stack' in x;
}

// ---------------------------------------------------------------- process.exit inside activations

/** Thrown by process.exit inside an activation: ends that activation, not the process. */
class ExitRequest {
  constructor(act, code) {
    this.act = act;
    this.code = code;
  }
}

function exitInActivation(code) {
  const act = current.getStore();
  if (act === undefined) return realExit(code);
  const number = Number(code ?? 0);
  throw new ExitRequest(act, Number.isInteger(number) ? number : 1);
}

function exitActivation(request) {
  const { act, code } = request;
  if (act.done) {
    fs.writeSync(2, `actionproxy: process.exit(${code}) ignored: activation ${act.id} had already ended\n`);
    return;
  }
  finish(act, FAILED, Buffer.from(JSON.stringify({ reason: 'exit', code })));
}

/** process.exit from a timer or a promise nobody awaits arrives here. Anything else is
 * fatal, as in plain Node: the proxy restarts the launcher. */
function onUncaught(err) {
  if (err instanceof ExitRequest) return exitActivation(err);
  fs.writeSync(2, `Uncaught exception in the action: ${util.inspect(err)}\n`);
  realExit(1);
}

// ---------------------------------------------------------------- environment and streams

/** process.env whose `__OW_*` keys read the current activation's values. */
function activationEnv(real) {
  const overlay = (key) => {
    const act = current.getStore();
    return act !== undefined && typeof key === 'string' && key in act.env ? act.env : undefined;
  };
  const ours = (key) => current.getStore() !== undefined && typeof key === 'string' &&
    (key.startsWith('__OW_') || key in current.getStore().env);
  return new Proxy(real, {
    get(t, key) {
      const env = overlay(key);
      return env === undefined ? t[key] : env[key];
    },
    has(t, key) {
      const env = overlay(key);
      return env === undefined ? key in t : env[key] !== undefined;
    },
    set(t, key, val) {
      if (ours(key)) current.getStore().env[key] = String(val);
      else t[key] = val;
      return true;
    },
    deleteProperty(t, key) {
      if (ours(key)) current.getStore().env[key] = undefined; // hidden for this activation only
      else delete t[key];
      return true;
    },
    ownKeys(t) {
      const act = current.getStore();
      if (act === undefined) return Reflect.ownKeys(t);
      const keys = Reflect.ownKeys(t).filter((k) => !(k in act.env));
      return keys.concat(Object.keys(act.env).filter((k) => act.env[k] !== undefined));
    },
    getOwnPropertyDescriptor(t, key) {
      const env = overlay(key);
      if (env === undefined) return Reflect.getOwnPropertyDescriptor(t, key);
      if (env[key] === undefined) return undefined;
      return { value: env[key], writable: true, enumerable: true, configurable: true };
    },
  });
}

/** Writes inside an unfinished activation go to its buffers; others go through. */
function captureWrites(stream, field) {
  const write = stream.write.bind(stream);
  stream.write = (chunk, encoding, callback) => {
    const act = current.getStore();
    const bytes = typeof chunk === 'string' || chunk instanceof Uint8Array;
    if (act === undefined || act.done || !bytes) return write(chunk, encoding, callback); // !bytes: Node's own TypeError
    if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    act.log(act[field], chunk, encoding);
    if (typeof callback === 'function') process.nextTick(callback);
    return true;
  };
}

/** `globalThis.__ow_activation.signal`: aborted when the proxy cancels the activation. */
function activationView() {
  const act = current.getStore();
  return act === undefined ? undefined : { signal: act.signal };
}

// ---------------------------------------------------------------- loading the action

class InitFailure extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // 'compile' or 'start', as INIT_DONE reports it
  }
}

/** The handler, once loaded: CommonJS loads at once, an ES module (import/export) by import(). */
async function loadAction(spec) {
  for (const [key, val] of Object.entries(spec.env || {})) process.env[key] = val;
  process.chdir(spec.root);
  const handler = await (spec.source ? loadSource(spec) : loadPackage(spec));
  if (typeof handler !== 'function') {
    throw new InitFailure('start', `Action entrypoint '${spec.main}' is not a function.`);
  }
  return handler;
}

/** `main` (or `module.fn`) from an ES module's exports; `main` is also its default export. */
function exported(namespace, main) {
  const walk = (from) => main.split('.').reduce((obj, name) => (obj == null ? undefined : obj[name]), from);
  const named = walk(namespace);
  if (named !== undefined) return named;
  const fallback = namespace.default;
  return typeof fallback === 'function' && main === 'main' ? fallback : walk(fallback);
}

/** Code that is an ES module: its own `.mjs` file beside the entry, then import(). */
async function importSource(filename, code, main) {
  const file = filename.replace(/\.[cm]?js$/, '') + '.mjs';
  fs.writeFileSync(file, code);
  let namespace;
  try {
    namespace = await import(pathToFileURL(file).href);
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    const notJavaScript = () => new InitFailure('compile', whereSyntaxFails(file, err));
    return runCommonJS(fromTypeScript(code, filename, notJavaScript), filename, main); // TypeScript with imports
  }
  return exported(namespace, main);
}

/** import() reports a module's syntax error without its place; `node --check` names the line. */
function whereSyntaxFails(file, err) {
  const { spawnSync } = require('child_process');
  const checked = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 10000 });
  return (checked.stderr || '').trim() || String(err);
}

function isModuleSyntax(err) {
  return err instanceof SyntaxError && /Cannot use import statement|Unexpected token 'export'|import\.meta/.test(err.message);
}

const NAME = '[\\p{ID_Start}$_][\\p{ID_Continue}$\\u200c\\u200d]*';
const DOTTED_NAME = new RegExp(`^${NAME}(\\.${NAME})*$`, 'u');

/** Plain-text code, run as OpenWhisk's Node runtime does: in a function that returns `main`,
 * else module.exports.main or exports.main (`global.main` is found by the first lookup). Code
 * that is an ES module is imported; code that is neither, TypeScript, is transpiled. */
function loadSource({ root, entry, main }) {
  if (!DOTTED_NAME.test(main)) { // it is pasted into code below
    throw new InitFailure('start', `Action entrypoint '${main}' is not a function.`);
  }
  const filename = path.join(root, entry);
  let code;
  try {
    code = fs.readFileSync(filename, 'utf8');
  } catch (err) {
    throw new InitFailure('compile', `Error: cannot read the action's code: ${err.message}`);
  }
  if (code.startsWith('\ufeff')) code = code.slice(1);
  if (code.startsWith('#!')) code = '//' + code; // a shebang is a syntax error in a function body
  try {
    return runCommonJS(code, filename, main);
  } catch (err) {
    if (isModuleSyntax(err)) return importSource(filename, code, main); // `export function main`, `import x from`
    if (err instanceof SyntaxError) return runCommonJS(fromTypeScript(code, filename, () => err), filename, main);
    throw err;
  }
}

function runCommonJS(code, filename, main) {
  const body = `${code}
;try { return ${main}; } catch (e) {
  if (e.name === 'ReferenceError') return module.exports.${main} || exports.${main};
  throw e;
}`;
  const params = ['exports', 'require', 'module', '__filename', '__dirname'];
  const wrapper = vm.compileFunction(body, params, {
    filename,
    importModuleDynamically: vm.constants?.USE_MAIN_CONTEXT_DEFAULT_LOADER, // import() as in a file
  });
  const dirname = path.dirname(filename);
  const mod = new Module(filename, null);
  mod.filename = filename;
  mod.paths = Module._nodeModulePaths(dirname);
  return wrapper.call(mod.exports, mod.exports, Module.createRequire(filename), mod, filename, dirname);
}

let esbuild; // the transpiler (ACTIONPROXY_NODE_MODULES), loaded with the first TypeScript

/** TypeScript (types, interfaces, enums, `import`/`export`) as CommonJS JavaScript, by esbuild;
 * a syntax error names its line. Without esbuild, the error `otherwise()` gives (the code is
 * no JavaScript, and cannot be tried as TypeScript). */
function fromTypeScript(code, filename, otherwise) {
  if (esbuild === undefined) {
    try {
      esbuild = require(require.resolve('esbuild', { paths: [process.env.ACTIONPROXY_NODE_MODULES || __dirname] }));
    } catch {
      esbuild = null;
    }
  }
  if (esbuild === null) throw otherwise();
  try {
    return esbuild.transformSync(code, { loader: 'ts', format: 'cjs', sourcefile: filename,
                                         target: `node${process.versions.node.split('.')[0]}` }).code;
  } catch (err) {
    const first = err.errors && err.errors[0];
    if (!first || !first.location) throw err;
    const { file, line, column, lineText } = first.location;
    throw new InitFailure('compile', `${file}:${line}:${column + 1}: SyntaxError: ${first.text}\n    ${lineText}`);
  }
}

/** An extracted archive: `main` is `fn`, or `module.fn[.more]` naming the file to require. */
function loadPackage({ root, main }) {
  const dot = main.indexOf('.');
  const file = dot > 0 ? main.slice(0, dot) : undefined;
  const names = (dot > 0 ? main.slice(dot + 1) : main).split('.');
  if (file === undefined && !fs.existsSync(path.join(root, 'package.json'))
      && !fs.existsSync(path.join(root, 'index.js'))) {
    throw new InitFailure('start', ZIP_WITHOUT_ENTRY);
  }
  const target = file === undefined ? root : path.join(root, file);
  let handler;
  try {
    handler = require(target);
  } catch (err) {
    if (err.code !== 'ERR_REQUIRE_ESM') throw err; // "type": "module", or a .mjs entry
    return import(pathToFileURL(require.resolve(target)).href).then((namespace) => exported(namespace, names.join('.')));
  }
  for (const name of names) handler = handler == null ? undefined : handler[name];
  return handler;
}

/** Load the action, answer INIT_DONE, and resolve to the handler. */
async function init(payload) {
  let handler;
  try {
    const spec = JSON.parse(payload.toString('utf8'));
    handler = await loadAction({ ...spec, main: spec.main || 'main' });
  } catch (err) {
    failInit(err);
  }
  writeResults(frame(INIT_DONE, 0, Buffer.from('{"ok":true,"mode":"async"}')));
  return handler;
}

/** Tell the container log why, tell the proxy which kind of failure, and end. */
function failInit(err) {
  const syntax = err !== null && typeof err === 'object' && err.name === 'SyntaxError';
  const kind = err instanceof InitFailure ? err.kind : syntax ? 'compile' : 'start';
  const detail = err instanceof InitFailure ? err.message : util.inspect(err);
  fs.writeSync(2, `Error during initialization: ${detail}\n`);
  writeResults(frame(INIT_DONE, 0, Buffer.from(JSON.stringify({ ok: false, error: kind }))));
  realExit(0);
}

// ---------------------------------------------------------------- main

function main() {
  delete process.env.ACTIONPROXY_WORKER_SOCKET; // for sync-mode workers; the user's code has no use for it
  fs.writeSync(RESULTS_FD, '{"ok": true, "protocol": 2}\n');
  process.env = activationEnv(process.env);
  captureWrites(process.stdout, 'out');
  captureWrites(process.stderr, 'err');
  process.exit = exitInActivation;
  process.on('uncaughtException', onUncaught);
  Object.defineProperty(globalThis, '__ow_activation', { get: activationView });

  let handler = null;
  let loading = null; // the INIT being loaded (an ES module loads asynchronously)
  const early = []; // frames that came meanwhile
  const onFrame = (kind, id, payload) => {
    if (handler === null) {
      if (loading !== null) {
        early.push([kind, id, Buffer.from(payload)]); // a copy: the reader reuses its buffer
      } else if (kind === INIT) {
        loading = init(payload).then((loaded) => {
          handler = loaded;
          for (const args of early.splice(0)) onFrame(...args);
          if (running.size === 0) flush();
        });
      }
    } else if (kind === RUN) {
      startActivation(id, payload, handler);
    } else if (kind === CANCEL) {
      cancel(id);
    }
  };
  const read = frameReader(onFrame);
  process.stdin.on('data', (chunk) => {
    dispatching = true;
    try {
      read(chunk);
    } finally {
      dispatching = false;
    }
    if (running.size === 0) flush(); // all finished at once: no reason to wait for the turn's end
  });
  process.stdin.on('end', () => realExit(0));
  process.stdin.on('error', () => realExit(0));
}

main();
