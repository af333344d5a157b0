#!/usr/bin/env node
// Compile contracts/src/*.sol with solcjs (standard JSON, offline) and write one
// artifact per deployable contract to watcher/chain/compiled/<Name>.json (package data).
//
// The output is deterministic: fixed compiler settings, sources read in sorted order
// under stable relative paths, object keys sorted recursively and a fixed indentation.
// A fresh compile of unchanged sources is byte-identical to the committed artifacts
// (tests/chain/test_artifacts.py checks that).
//
// Usage: node scripts/compile.js [--out DIR]

"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const CONTRACTS_DIR = path.resolve(__dirname, "..");
const SRC_DIR = path.join(CONTRACTS_DIR, "src");

// Pinned settings: changing any of these changes the bytecode.
const EVM_VERSION = "cancun";
const OPTIMIZER = { enabled: true, runs: 200 };

function parseArgs(argv) {
  // The artifacts live inside the Python package (package data of the wheel).
  let outDir = path.join(CONTRACTS_DIR, "..", "watcher", "chain", "compiled");
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--out") {
      if (i + 1 >= argv.length) throw new Error("--out needs a directory");
      outDir = path.resolve(argv[++i]);
    } else if (arg.startsWith("--out=")) {
      outDir = path.resolve(arg.slice("--out=".length));
    } else {
      throw new Error(`unknown argument: ${arg}`);
    }
  }
  return { outDir };
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const sorted = {};
    for (const key of Object.keys(value).sort()) sorted[key] = sortKeys(value[key]);
    return sorted;
  }
  return value;
}

// Only imports inside contracts/ (src/ or node_modules/) are resolved.
function findImports(importPath) {
  const candidates = [
    path.join(CONTRACTS_DIR, importPath),
    path.join(CONTRACTS_DIR, "node_modules", importPath),
  ];
  for (const candidate of candidates) {
    if (candidate.startsWith(CONTRACTS_DIR + path.sep) && fs.existsSync(candidate)) {
      return { contents: fs.readFileSync(candidate, "utf8") };
    }
  }
  return { error: `import not found: ${importPath}` };
}

function main() {
  const { outDir } = parseArgs(process.argv.slice(2));

  const files = fs.readdirSync(SRC_DIR).filter((f) => f.endsWith(".sol")).sort();
  if (files.length === 0) throw new Error(`no .sol files in ${SRC_DIR}`);
  const sources = {};
  for (const file of files) {
    // Normalise line endings so a checkout with CRLF compiles to the same metadata hash.
    const content = fs.readFileSync(path.join(SRC_DIR, file), "utf8").replace(/\r\n/g, "\n");
    sources[`src/${file}`] = { content };
  }

  const input = {
    language: "Solidity",
    sources,
    settings: {
      evmVersion: EVM_VERSION,
      optimizer: OPTIMIZER,
      outputSelection: {
        "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
      },
    },
  };

  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const diag of output.errors || []) {
    process.stderr.write((diag.formattedMessage || diag.message) + "\n");
  }
  if (errors.length > 0) {
    process.stderr.write(`compilation failed with ${errors.length} error(s)\n`);
    process.exit(1);
  }

  const compiler = {
    evmVersion: EVM_VERSION,
    optimizer: OPTIMIZER,
    version: solc.version(),
  };

  fs.mkdirSync(outDir, { recursive: true });
  const written = [];
  for (const sourceName of Object.keys(output.contracts || {}).sort()) {
    if (!sourceName.startsWith("src/")) continue; // skip imported libraries' own units
    const unit = output.contracts[sourceName];
    for (const contractName of Object.keys(unit).sort()) {
      const contract = unit[contractName];
      const bytecode = contract.evm.bytecode.object;
      if (!bytecode) continue; // interfaces and abstract contracts
      const artifact = sortKeys({
        contractName,
        abi: contract.abi,
        bytecode: "0x" + bytecode,
        deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
        compiler,
      });
      const target = path.join(outDir, `${contractName}.json`);
      fs.writeFileSync(target, JSON.stringify(artifact, null, 2) + "\n");
      written.push(target);
    }
  }
  for (const target of written) process.stdout.write(`wrote ${path.relative(process.cwd(), target)}\n`);
}

try {
  main();
} catch (err) {
  process.stderr.write(`compile.js: ${err.message}\n`);
  process.exit(1);
}
