/**
 * The orchestrator's handle on the load-generator process (`loadgen.ts`): one long-lived child
 * that runs one job at a time, so no job pays for a process start.
 * @module
 */

import { fileURLToPath } from "node:url";
import type { Job, JobResult, Reply } from "./loadgen.ts";
import { Child, readLines, spawnChild } from "../_shared/processes.ts";

/** The load generator running in its own process. */
export class GeneratorProcess implements AsyncDisposable {
  readonly #child: Child;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: Child) {
    this.#child = child;
    this.#writer = child.process.stdin.getWriter();
    this.#lines = readLines(child.process.stdout)[Symbol.asyncIterator]();
  }

  /** Starts the generator with a raised file-descriptor limit. */
  static start(): GeneratorProcess {
    const script = fileURLToPath(new URL("./loadgen.ts", import.meta.url));
    const child = spawnChild("load generator", Deno.execPath(), ["run", "-A", script], {
      raiseFdLimit: true,
      stdin: true,
    });
    return new GeneratorProcess(child);
  }

  /** Process id of the generator. */
  get pid(): number {
    return this.#child.pid;
  }

  /**
   * Runs one job and returns its result.
   * @throws {Error} with the generator's message when the job fails
   */
  async run<R extends JobResult>(job: Job): Promise<R> {
    await this.#writer.write(new TextEncoder().encode(JSON.stringify(job) + "\n"));
    const next = await this.#lines.next();
    if (next.done) {
      throw new Error(`The load generator exited; its last output:\n${this.#child.tail()}`);
    }
    const reply = JSON.parse(next.value) as Reply;
    if (!reply.ok) throw new Error(reply.error);
    return reply.result as R;
  }

  /** Stops the generator. */
  async stop(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#lines.return?.();
    await this.#child.stop();
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
