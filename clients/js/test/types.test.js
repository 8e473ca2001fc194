// The TypeScript declarations compile against the documented usage (test/types/usage.ts).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

test("xlmate-client.d.ts types the documented usage under tsc --strict", async () => {
  // Proves: the declarations exist, are valid, and reject misuse (the @ts-expect-error lines).
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const args = ["--noEmit", "--strict", "--target", "es2022", "--module", "nodenext"];
  const run = promisify(execFile)(process.execPath, [tsc, ...args, "test/types/usage.ts"], { cwd: ROOT });
  const { stdout } = await run.catch((err) => assert.fail(`tsc failed:\n${err.stdout}${err.stderr}`));
  assert.equal(stdout.trim(), "");
});

test("every value the declarations export exists in the module, and the other way round", async () => {
  // Proves: the hand-written .d.ts and xlmate-client.js export the same runtime names.
  const { readFile } = await import("node:fs/promises");
  const dts = await readFile(join(ROOT, "xlmate-client.d.ts"), "utf8");
  const declared = [...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]);
  const module = await import("../xlmate-client.js");
  assert.deepEqual(declared.sort(), Object.keys(module).sort());
});
