/**
 * One `relay connect` session: sending `DEST message` lines, the `/` commands, notices for
 * delivery errors and presence, and reconnecting when the connection is lost.
 * @module
 */

import {
  ControlRequestError,
  type DeliveryError,
  RegistrationError,
  type RegistrationFailure,
  type RelayClient,
  type RelayClientOptions,
} from "../client/client.ts";
import { parseAddressedLine, quoteName } from "./line.ts";
import { connectUnlessStopped, describeError, showBytes } from "./common.ts";

const encoder = new TextEncoder();

/** Longest wait for the relay's answer to /who, /watch or /ping. */
const REQUEST_TIMEOUT_MS = 10_000;
/** First and longest pause between reconnection attempts. */
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10_000;

/** Refusals that retrying cannot fix: the client gives up instead of reconnecting. */
const PERMANENT: ReadonlySet<RegistrationFailure> = new Set([
  "tls_port",
  "invalid_name",
  "auth_required",
  "bad_token",
  "unsupported_version",
]);

/** The commands of `relay connect`, for its help and `/help`. */
export const COMMANDS_HELP = `Commands:
  DEST message         send "message" to DEST ("DEST WITH SPACES" message, in double quotes)
  /who [PREFIX]        list who is online
  /watch NAME...       tell me when NAME comes online or goes offline
  /unwatch NAME...     stop watching
  /ping                round trip to the relay
  /quit                leave (or Ctrl-D, Ctrl-C)`;

/** Where the session shows things: above the prompt on a terminal, else stdout and stderr. */
export interface Screen {
  /** An incoming message, a command's result: stdout. */
  out(text: string): void;
  /** A notice (error, presence, connection): stderr when piped. */
  notice(text: string): void;
}

/** One user's connection: sending, commands, notices, and reconnecting when it is lost. */
export class Session {
  #client: RelayClient;
  readonly #options: RelayClientOptions | undefined;
  readonly #screen: Screen;
  readonly #stop: AbortSignal;
  readonly #onOnline: ((online: boolean) => void) | undefined;
  readonly #watched = new Set<string>();
  #online = true;
  #closing = false;
  #receiving: Promise<void>;
  #fail!: (error: Error) => void;
  /** Resolves with the error when the session cannot go on (the command then exits 1). */
  readonly failed: Promise<Error>;

  /**
   * @param options how to reconnect; without them a lost connection fails the session
   */
  constructor(
    client: RelayClient,
    options: RelayClientOptions | undefined,
    screen: Screen,
    stop: AbortSignal,
    onOnline?: (online: boolean) => void,
  ) {
    this.#client = client;
    this.#options = options;
    this.#screen = screen;
    this.#stop = stop;
    this.#onOnline = onOnline;
    this.failed = new Promise((resolve) => this.#fail = resolve);
    this.#attach(client);
    this.#receiving = this.#receive(client);
  }

  #attach(client: RelayClient): void {
    client.onError = (e) => this.#screen.notice(deliveryText(e));
    client.onPresence = ({ name, online }) =>
      this.#screen.notice(`${quoteName(name)} is ${online ? "online" : "offline"}`);
  }

  async #receive(client: RelayClient): Promise<void> {
    try {
      for await (const { from, payload } of client) {
        this.#screen.out(`${quoteName(from)}: ${showBytes(payload)}`);
      }
    } catch (error) {
      this.#screen.notice(`Bad data from the relay: ${describeError(error)}`);
    }
    if (this.#closing || this.#stop.aborted) return;
    const why = client.bye ? `${client.bye.message} (${client.bye.reason})` : "the relay closed it";
    if (!this.#options) {
      this.#fail(new Error(`Connection lost: ${why}`));
      return;
    }
    this.#screen.notice(`Connection lost: ${why}. Reconnecting…`);
    this.#setOnline(false);
    void this.#reconnect();
  }

  #setOnline(online: boolean): void {
    this.#online = online;
    this.#onOnline?.(online);
  }

  async #reconnect(): Promise<void> {
    let pause = RECONNECT_MIN_MS;
    let lastError = "";
    while (!this.#closing && !this.#stop.aborted) {
      await new Promise((r) => setTimeout(r, pause * (0.75 + Math.random() * 0.5)));
      if (this.#closing || this.#stop.aborted) return;
      try {
        const client = await connectUnlessStopped(this.#options!, this.#stop);
        if (!client) return;
        if (this.#closing) {
          await client.close();
          return;
        }
        this.#client = client;
        this.#attach(client);
        this.#setOnline(true);
        this.#screen.notice(`Reconnected as ${quoteName(client.name)}`);
        if (this.#watched.size > 0) {
          const online = await this.#ask(() => client.watch([...this.#watched])).catch(() => []);
          if (online.length) this.#screen.notice(`Online: ${online.map(quoteName).join(" ")}`);
        }
        this.#receiving = this.#receive(client);
        return;
      } catch (error) {
        if (error instanceof RegistrationError && PERMANENT.has(error.reason)) {
          this.#fail(new Error(`${error.message}; not retrying`));
          return;
        }
        const text = describeError(error);
        if (text !== lastError) this.#screen.notice(`Still offline: ${text}`);
        lastError = text;
      }
      pause = Math.min(RECONNECT_MAX_MS, pause * 2);
    }
  }

  /**
   * Handles one input line.
   * @returns false to quit, "bad" when the line could not be used, true otherwise
   */
  async handle(raw: string): Promise<boolean | "bad"> {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "") return true;
    if (line.startsWith("/")) return await this.#command(line);
    const addressed = parseAddressedLine(line);
    if ("error" in addressed) {
      this.#screen.notice(`${addressed.error}; type "DEST message" (/help for more)`);
      return "bad";
    }
    if (!this.#online) {
      this.#screen.notice("Not sent: offline, reconnecting");
      return "bad";
    }
    try {
      await this.#client.send(addressed.dest, encoder.encode(addressed.message));
    } catch (error) {
      this.#screen.notice(`Not sent: ${describeError(error)}`);
      return "bad";
    }
    return true;
  }

  async #command(line: string): Promise<boolean | "bad"> {
    const [command, ...rest] = splitWords(line);
    const names = rest;
    try {
      switch (command) {
        case "/quit":
        case "/exit":
          return false;
        case "/help":
          this.#screen.out(COMMANDS_HELP);
          return true;
        case "/who": {
          const all = await this.#ask(() => this.#client.who(rest[0]));
          this.#screen.out(
            all.length ? `Online: ${all.map(quoteName).join(" ")}` : "Nobody online",
          );
          return true;
        }
        case "/watch": {
          if (names.length === 0) throw new TypeError("Usage: /watch NAME...");
          const online = await this.#ask(() => this.#client.watch(names));
          for (const n of names) this.#watched.add(n);
          const set = new Set(online);
          this.#screen.out(
            names.map((n) => `${quoteName(n)} is ${set.has(n) ? "online" : "offline"}`).join(
              "\n",
            ),
          );
          return true;
        }
        case "/unwatch":
          if (names.length === 0) throw new TypeError("Usage: /unwatch NAME...");
          await this.#ask(() => this.#client.unwatch(names));
          for (const n of names) this.#watched.delete(n);
          return true;
        case "/ping": {
          const pong = await this.#ask(() => this.#client.ping());
          this.#screen.out(`Pong from the relay in ${pong.rttMs.toFixed(1)} ms`);
          return true;
        }
        default:
          this.#screen.notice(
            `Unknown command ${command}; /help lists them (to send to a name that begins ` +
              `with /, quote it: "${command}" message)`,
          );
          return "bad";
      }
    } catch (error) {
      if (error instanceof ControlRequestError && error.reason === "listing_disabled") {
        this.#screen.notice("This relay does not list who is online (--listing off)");
      } else {
        this.#screen.notice(describeError(error));
      }
      return "bad";
    }
  }

  /** Runs a request to the relay with a deadline, and only while connected. */
  async #ask<T>(request: () => Promise<T>): Promise<T> {
    if (!this.#online) throw new Error("Offline, reconnecting");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`No answer from the relay within ${REQUEST_TIMEOUT_MS / 1000}s`)),
        REQUEST_TIMEOUT_MS,
      );
    });
    try {
      return await Promise.race([request(), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Waits until the relay has routed everything sent (a barrier).
   * @returns false when a message reached nobody or there was no answer
   */
  async settle(): Promise<boolean> {
    if (!this.#online) return false;
    try {
      const { dropped } = await this.#ask(() => this.#client.flush());
      if (dropped > 0) {
        this.#screen.notice(`${dropped} message${dropped === 1 ? " was" : "s were"} not delivered`);
        return false;
      }
      return true;
    } catch (error) {
      this.#screen.notice(describeError(error));
      return false;
    }
  }

  /** Closes the connection (safe twice). */
  async close(): Promise<void> {
    this.#closing = true;
    await this.#client.close();
    await this.#receiving.catch(() => {});
  }
}

/** A delivery error as a person reads it. */
export function deliveryText(e: DeliveryError): string {
  const dest = quoteName(e.dest);
  if (e.reason === "message_too_large") {
    return `Not delivered to ${dest}: ${e.size ?? "the"} bytes is over the relay's limit of ` +
      `${e.limit} bytes`;
  }
  const count = e.count > 1 ? ` (${e.count} messages)` : "";
  return `Not delivered to ${dest}: nobody has that name${count}`;
}

/** Splits a command line into words; double quotes keep spaces (`/watch "my laptop"`). */
function splitWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.matchAll(re)) {
    words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2]);
  }
  return words;
}
