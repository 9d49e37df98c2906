// sbox's npm scripts phase: run the install scripts of the packages an install added or changed,
// as the install would have run them, with npm's own modules and without loading the whole tree.
//
//   node npm_scripts.js NPM COMMAND [FLAG...] -- [DIR...]
//
// NPM is the npm the user ran (a path, or a name looked up on PATH as a shell would), COMMAND the
// install's subcommand (`ci`, `install`) and FLAGs the user's settings that are safe offline: npm
// loads its configuration from them, the environment and the npmrc files exactly as for that
// command, so the scripts see the environment npm gives them (npm_config_*, npm_command, INIT_CWD,
// npm_execpath, ...). DIRs are the packages to build (absolute paths; the project's own directory
// stands for its preinstall/install/postinstall). Each package's scripts run as npm's reify runs
// them (arborist's rebuild.js): preinstall of all, their bins linked, then install (node-gyp's
// `rebuild` for a binding.gyp without one), then postinstall, shallowest first, the output kept
// and shown only on failure (unless --foreground-scripts); the project's own after them, its
// output shown, as `npm ci`/`npm install` do. A failure ends with npm's own error report.
//

// Where npm would decide more than this knows (an allowScripts policy, the linked install
// strategy, a global install, no directories named, a package outside the project, an npm
// without the modules used here), it runs `npm rebuild DIR...` in this process instead.
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { createRequire } = require('node:module')

// `--later=FD` (bwrap) or `--later=PATH` (a container's gate, a FIFO) first: started ahead, while
// the install's download runs. The driver loads npm and its configuration, then reads the rest of
// its command line from there (`go`, then each word, each ended by a NUL, then end of file) once
// sbox has decided it; anything else (closed unwritten) runs nothing.
const args = process.argv.slice(2)
const laterArg = args[0] && args[0].startsWith('--later=') ? args.shift().slice(8) : null
const later = laterArg === null ? null : /^[0-9]+$/.test(laterArg) ? Number(laterArg) : laterArg
const [tool, command, ...rest] = args
let flags, dirs
const parse = (words) => {
  const split = words.indexOf('--')
  flags = split < 0 ? words : words.slice(0, split)
  dirs = split < 0 ? [] : words.slice(split + 1)
}
parse(rest)

// The rest of the command line, when started ahead: waits here until sbox writes it
const awaitTurn = () => {
  if (later === null) {
    return
  }
  let words
  try {
    words = fs.readFileSync(later).toString('utf8').split('\0') // a FIFO's open waits for sbox
    if (typeof later === 'number') {
      fs.closeSync(later)
    }
  } catch {
    words = []
  }
  if (words.shift() !== 'go' || words.pop() !== '') {
    process.exit(125)
  }
  parse([...rest, ...words])
}

const findNpm = (name) => {
  if (name.includes('/')) {
    return fs.realpathSync(name)
  }
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir || '.', name)
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return fs.realpathSync(candidate)
    } catch {}
  }
  throw Object.assign(new Error(`${name}: not found on PATH`), { code: 'ENOENT' })
}

const cli = findNpm(tool) // <npm>/bin/npm-cli.js
const root = path.dirname(path.dirname(cli))

// `npm rebuild DIR...`, in this process: npm's own command line
const rebuild = () => {
  awaitTurn()
  process.argv = [process.argv[0], cli, 'rebuild', ...flags, ...dirs]
  require(cli)
}

// npm's own modules, as its install loads them; null for an npm whose modules are not these
let lib, arb
try {
  lib = createRequire(path.join(root, 'lib', 'npm.js'))
  arb = createRequire(path.join(root, 'node_modules', '@npmcli', 'arborist', 'lib', 'arborist', 'rebuild.js'))
  for (const name of ['@npmcli/run-script', '@npmcli/package-json', '@npmcli/node-gyp', 'bin-links',
    'promise-call-limit', '@isaacs/string-locale-compare']) {
    arb.resolve(name)
  }
  lib('graceful-fs').gracefulify(fs) // as npm's entry does, first
  const shapes = [lib('./cli/exit-handler.js').prototype?.registerUncaughtHandlers, lib('./npm.js').cmd,
    lib('./npm.js').prototype?.exec, lib('./arborist-cmd.js'), lib('./utils/cmd-list.js').deref, lib('proc-log').log]
  if (!shapes.every(Boolean)) {
    lib = null
  }
} catch {
  lib = null
}

const main = async () => {
  process.title = 'npm'
  process.argv = [process.argv[0], cli, command, ...flags] // what npm's configuration is read from
  const ExitHandler = lib('./cli/exit-handler.js')
  const exitHandler = new ExitHandler({ process })
  const Npm = lib('./npm.js')
  const npm = new Npm()
  exitHandler.setNpm(npm)
  const { log } = lib('proc-log')
  log.verbose('cli', process.argv.slice(0, 2).join(' '))
  log.info('using', 'npm@%s', npm.version)
  log.info('using', 'node@%s', process.version)
  exitHandler.registerUncaughtHandlers()
  try {
    const { exec } = await npm.load()
    if (!exec) {
      return exitHandler.exit()
    }
    if (later !== null) { // what the build needs loaded before the turn comes, then wait for it
      for (const name of ['@npmcli/run-script', '@npmcli/package-json', '@npmcli/node-gyp', 'bin-links',
        'promise-call-limit', '@isaacs/string-locale-compare']) {
        arb(name)
      }
      awaitTurn()
    }
    if (await delegate(npm)) {
      await npm.exec('rebuild', dirs)
    } else {
      // npm's own command (its name, workspaces and error report; `ci` and `install` are
      // ArboristCmds), building instead of installing, without the install's own modules
      const name = lib('./utils/cmd-list.js').deref(command) || command
      class Build extends lib('./arborist-cmd.js') {
        static name = name
        static checkDevEngines = false // checked by the install itself

        async exec () {
          await build(this.npm, log)
        }
      }
      Npm.cmd = () => Build
      await npm.exec(command, [])
    }
    return exitHandler.exit()
  } catch (err) {
    return exitHandler.exit(err)
  }
}

// Does npm's rebuild have to decide: an allowScripts policy or mode, a link, a global install?
const delegate = async (npm) => {
  const opts = npm.flatOptions
  if (!dirs.length || npm.global || opts.strictAllowScripts || opts.dangerouslyAllowAllScripts) {
    return true
  }
  const cfg = npm.config
  if (cfg.get('allow-scripts') !== undefined && String(cfg.get('allow-scripts') || '') !== '') {
    return true
  }
  try {
    const manifest = JSON.parse(fs.readFileSync(path.join(npm.prefix, 'package.json'), 'utf8'))
    if (manifest && manifest.allowScripts !== undefined) {
      return true
    }
  } catch {}
  if (npm.config.get('install-strategy') === 'linked') {
    return true
  }
  return dirs.some(d => !inside(d, npm.prefix) || !lstat(d) || !inside(realpath(d), npm.prefix))
}

const inside = (p, dir) => p === dir || p.startsWith(dir + path.sep)

const realpath = (p) => {
  try {
    return fs.realpathSync(p)
  } catch {
    return ''
  }
}

const lstat = (p) => {
  try {
    return fs.lstatSync(p)
  } catch {
    return null
  }
}

const boolEnv = b => b ? '1' : ''

const build = async (npm, log) => {
  const opts = npm.flatOptions
  if (opts.ignoreScripts) {
    return
  }
  const runScript = arb('@npmcli/run-script')
  const PackageJson = arb('@npmcli/package-json')
  const { isNodeGypPackage, defaultGypInstallScript } = arb('@npmcli/node-gyp')
  const { callLimit } = arb('promise-call-limit')
  const localeCompare = arb('@isaacs/string-locale-compare')('en')
  const prefix = npm.prefix
  let lock = {}
  try {
    lock = JSON.parse(fs.readFileSync(path.join(prefix, 'node_modules', '.package-lock.json'), 'utf8')).packages || {}
  } catch {}

  // a package to build: `dir` below node_modules, a link's target (a workspace, a file: dependency
  // inside the project) built in place after the others, as arborist's rebuild builds links
  const load = async (dir) => {
    const link = lstat(dir).isSymbolicLink()
    const where = link ? fs.realpathSync(dir) : dir
    const location = path.relative(prefix, where).split(path.sep).join('/')
    const { content: pkg } = await PackageJson.normalize(where).catch(() => ({ content: {} }))
    const scripts = pkg.scripts = pkg.scripts || {}
    if (pkg.gypfile !== false && !scripts.install && !scripts.preinstall && await isNodeGypPackage(dir)) {
      scripts.install = defaultGypInstallScript
    }
    const meta = { ...lock[location] }
    if (typeof meta.resolved === 'string' && meta.resolved.startsWith('file:')) {
      meta.resolved = `file:${path.resolve(prefix, meta.resolved.slice(5))}` // as arborist reads it
    }
    const depth = path.relative(prefix, dir).split(path.sep).join('/').split('/node_modules/').length
    return { path: where, bin: dir, location, pkg, meta, depth, link }
  }
  const deps = []
  const links = []
  let own = false
  for (const dir of dirs) {
    if (dir === prefix) {
      own = true
    } else {
      const node = await load(dir)
      ;(node.link ? links : deps).push(node)
    }
  }
  const order = (a, b) => (a.depth - b.depth) || localeCompare(a.bin, b.bin)
  deps.sort(order)
  links.sort(order)

  const stdio = opts.foregroundScripts ? 'inherit' : 'pipe'
  const failed = []
  const run = async (nodes, event) => {
    const queue = nodes.filter(n => n.pkg.scripts[event] && !failed.includes(n))
    await callLimit(queue.map(node => async () => {
      const { path: where, pkg, meta, location } = node
      log.info('run', pkg._id, event, location, pkg.scripts[event])
      const env = {
        npm_package_resolved: meta.resolved ?? null, // as arborist's node: null when unknown
        npm_package_integrity: meta.integrity ?? null,
        npm_package_json: path.resolve(where, 'package.json'),
        npm_package_optional: boolEnv(meta.optional),
        npm_package_dev: boolEnv(meta.dev),
        npm_package_peer: boolEnv(meta.peer),
        npm_package_dev_optional: boolEnv(meta.devOptional && !meta.dev && !meta.optional),
      }
      let result
      try {
        result = await runScript({ event, path: where, pkg, stdio, env, scriptShell: opts.scriptShell })
      } catch (er) {
        log.info('run', pkg._id, event, { code: er.code, signal: er.signal })
        if (meta.optional !== true) {
          throw er
        }
        // as npm's install: an optional dependency whose script fails is removed, the install goes on
        log.verbose('reify', 'failed optional dependency', where)
        failed.push(node)
        return
      }
      log.info('run', pkg._id, event, { code: result.code, signal: result.signal })
    }), { limit: opts.foregroundScripts ? 1 : undefined })
  }

  const binLinks = arb('bin-links')
  for (const nodes of [deps, links]) {
    await run(nodes, 'preinstall')
    if (nodes === links) {
      await run(nodes, 'prepare')
    }
    if (opts.binLinks) {
      await Promise.all(nodes.filter(n => n.pkg.bin).map(n =>
        binLinks({ pkg: n.pkg, path: n.bin, top: false, force: opts.force, global: false })))
    }
    await run(nodes, 'install')
    await run(nodes, 'postinstall')
  }
  if (failed.length) {
    await drop(prefix, failed)
  }
  if (own) {
    const scriptShell = npm.config.get('script-shell') || undefined
    for (const event of ['preinstall', 'install', 'postinstall']) {
      await runScript({ path: prefix, args: [], scriptShell, stdio: 'inherit', event })
    }
  }
  unreviewed(npm, deps, log)
}

// Remove failed optional dependencies as npm's install does: their folders, the bins linked to
// them and their entries in npm's hidden lockfile (package-lock.json keeps them, for other machines).
const drop = async (prefix, failed) => {
  const modules = path.join(prefix, 'node_modules')
  let bins = []
  try {
    bins = fs.readdirSync(path.join(modules, '.bin'), { withFileTypes: true }).filter(e => e.isSymbolicLink())
  } catch {}
  for (const bin of bins) {
    const link = path.join(modules, '.bin', bin.name)
    if (failed.some(n => inside(path.resolve(path.dirname(link), fs.readlinkSync(link)), n.path))) {
      fs.rmSync(link, { force: true })
    }
  }
  for (const node of failed) {
    fs.rmSync(node.path, { recursive: true, force: true })
  }
  const hidden = path.join(modules, '.package-lock.json')
  try {
    const lock = JSON.parse(fs.readFileSync(hidden, 'utf8'))
    for (const key of Object.keys(lock.packages || {})) {
      if (failed.some(n => key === n.location || key.startsWith(n.location + '/'))) {
        delete lock.packages[key]
      }
    }
    fs.writeFileSync(hidden, JSON.stringify(lock, null, 2) + '\n')
  } catch {}
}

// npm's advisory after an install that ran scripts no allowScripts policy covers (reify-output.js)
const unreviewed = (npm, nodes, log) => {
  const lines = []
  for (const { pkg } of nodes) {
    const events = ['preinstall', 'install', 'postinstall'].filter(e => pkg.scripts[e])
    if (events.length) {
      lines.push(`  ${pkg.name || '<unknown>'}${pkg.version ? `@${pkg.version}` : ''} (` +
        `${events.map(e => `${e}: ${pkg.scripts[e]}`).join('; ')})`)
    }
  }
  if (!lines.length || !npm.config.definitions || !npm.config.definitions['allow-scripts']) {
    return
  }
  const count = lines.length
  log.warn('install-scripts', [
    `${count} ${count === 1 ? 'package has' : 'packages have'} install scripts not yet covered by allowScripts:`,
    ...lines, '',
    'Run `npm install-scripts ls` to review, or `npm install-scripts approve <pkg>` to allow.',
  ].join('\n'))
}

if (lib) {
  main()
} else {
  rebuild()
}
