// sbox: yarn 2+'s install state after its offline scripts phase (yarn.py), written into the
// sandbox by sbox; run with the network off, the project read-only but for the state file.
//
//   node yarn_state.js KEPT WRITTEN STATE
//
// KEPT is sbox's copy of `.yarn/install-state.gz` as the download phase wrote it (only yarn ran
// there); WRITTEN the copy the scripts phase wrote, whose packages' scripts could write it; STATE
// the project's file, which becomes KEPT with the scripts phase's record of what it built
// (`storedBuildState`, `skippedBuilds`: which packages the next install builds) and nothing else
// of WRITTEN: `yarn run`, `yarn exec` and `yarn bin` on the host take each package's `bin` from
// `storedPackages`, which a script could have pointed at a file of its own. The record is taken
// only for packages the download phase knew, each entry two short strings.
'use strict';
const fs = require('fs');
const v8 = require('v8');
const zlib = require('zlib');
const { isDeepStrictEqual } = require('util');

const [kept, written, state] = process.argv.slice(2);
const CAP = 1 << 28; // a gzip bomb, or a file padded past it, stops here
const raw = (path) => {
  if (fs.statSync(path).size > CAP) throw new Error(`larger than ${CAP} bytes`);
  return zlib.gunzipSync(fs.readFileSync(path), { maxOutputLength: CAP });
};

const merged = v8.deserialize(raw(kept));
let built = null;
let builtRaw = null;
try {
  builtRaw = raw(written);
  built = v8.deserialize(builtRaw);
  built = typeof built === 'object' ? built : null;
} catch (e) {
  process.stderr.write(`sbox: yarn's install state after the scripts phase is unreadable (${e.message}); kept as the download wrote it\n`);
}
const known = merged.storedPackages instanceof Map ? merged.storedPackages : new Map();
const hash = (value) => typeof value === 'string' && value.length <= 256 && known.has(value);
const plain = (value) => typeof value === 'string' && value.length <= 256;

if (built !== null && built.storedBuildState instanceof Map) {
  const record = new Map();
  for (const [locator, digest] of built.storedBuildState) {
    if (hash(locator) && plain(digest)) record.set(locator, digest);
  }
  merged.storedBuildState = record;
}
if (built !== null && 'skippedBuilds' in merged && built.skippedBuilds instanceof Set) {
  merged.skippedBuilds = new Set([...built.skippedBuilds].filter(hash));
}
// what else the scripts phase changed, which is dropped: said, as a package's doing
if (built !== null) {
  const differs = (key) => {
    try {
      return !isDeepStrictEqual(merged[key], built[key]); // content, not which objects yarn shared
    } catch (e) {
      return true; // nested past the stack
    }
  };
  const keys = [...new Set([...Object.keys(merged), ...Object.keys(built)])];
  const changed = keys.filter((key) => key !== 'storedBuildState' && key !== 'skippedBuilds' && differs(key));
  if (changed.length) {
    process.stderr.write(`sbox: ${state}: the scripts phase changed yarn's ${changed.slice(0, 8).map((k) => JSON.stringify(k)).join(', ')} in its install state; `
      + `kept as the download wrote it (a package's install script may have tried to change what \`yarn run\` runs)\n`);
  }
}
// When the merged state is the scripts phase's in content (nothing dropped: a plain install), its
// bytes are yarn's own serialization of it (which objects it shares), which the next download then
// leaves byte for byte, so that the next install's note can match; re-compressed, so that nothing
// after the data (a padding) is kept. Else sbox's serialization of the merged state.
let same = false;
try {
  same = built !== null && isDeepStrictEqual(merged, built);
} catch (e) {
  same = false;
}
fs.writeFileSync(state, zlib.gzipSync(same ? builtRaw : v8.serialize(merged)));
