#!/usr/bin/env node
/**
 * The program: starts the CLI on whichever runtime runs it. This is what
 * `mod.ts` loads under `import.meta.main`, the npm package's `bin`, and the
 * entry of the single-binary build.
 *
 * @module
 */
import { currentRuntime } from "./detect.ts";
import { main } from "./main.ts";

const { adapter, host } = await currentRuntime();
await main(adapter, host);
