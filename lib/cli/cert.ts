/**
 * `relay cert`: writes a self-signed TLS certificate and key for `relay serve --tls-cert
 * --tls-key` that clients accept with `--ca` (the same certificate file).
 *
 * The certificate is an end-entity certificate (`CA:FALSE`, server authentication, the given
 * names and IPs as subjectAltName) signed by its own key. Clients' TLS (rustls) refuses a
 * certificate marked `CA:TRUE` as a server certificate (`CaUsedAsEndEntity`), which is what
 * `openssl req -x509` makes by default; this is the same command with the extensions that fix
 * it. It shells out to `openssl`: the one X.509 library for Deno that needs no native code,
 * `@peculiar/x509`, requires a global `reflect-metadata` polyfill, and a certificate is made
 * once per server, where `openssl` is nearly always installed.
 * @module
 */

import { parseHost, UsageError } from "./flags.ts";
import type { CommandSpec } from "./flag_table.ts";
import { describeError, HELP_FLAG, parseCommand } from "./common.ts";

const SPEC: CommandSpec = {
  command: "relay cert",
  about: "write a self-signed TLS certificate and key that clients accept with --ca",
  usage: "relay cert --host NAME_OR_IP [--host ...] [--cert FILE] [--key FILE] [--days N]",
  description:
    `Writes a certificate (CA:FALSE, for server authentication, valid for every --host) and its
private key (P-256; openssl creates it readable by you only) with openssl, which must be installed. Then:
  relay serve --tls-cert cert.pem --tls-key key.pem
  relay connect --ca cert.pem relay.example.com:8080 alice
Clients verify the name they connect to against the --host names, so list every name and IP
they will use. Existing files are not overwritten unless --force is given.`,
  flags: [
    {
      name: "host",
      type: "string",
      value: "NAME_OR_IP",
      multiple: true,
      help: "a DNS name or IP address clients connect to; repeatable (the first is the CN)",
      group: "Certificate",
    },
    {
      name: "cert",
      type: "string",
      value: "FILE",
      default: "cert.pem",
      help: "where to write the certificate (PEM); give the same file to clients' --ca",
      group: "Certificate",
    },
    {
      name: "key",
      type: "string",
      value: "FILE",
      default: "key.pem",
      help: "where to write the private key (PEM)",
      group: "Certificate",
    },
    {
      name: "days",
      type: "count",
      default: "825",
      help: "days the certificate is valid",
      group: "Certificate",
    },
    {
      name: "force",
      type: "boolean",
      help: "overwrite existing files",
      group: "Certificate",
    },
    HELP_FLAG,
  ],
};

/**
 * The openssl arguments that make a self-signed server certificate for `hosts`.
 * @param hosts DNS names and IP addresses; the first is also the subject CN
 */
export function opensslArgs(hosts: string[], cert: string, key: string, days: number): string[] {
  const san = hosts.map((h) => (isIp(h) ? `IP:${h}` : `DNS:${h}`)).join(",");
  return [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    String(days),
    "-subj",
    `/CN=${hosts[0]}`,
    "-addext",
    `subjectAltName=${san}`,
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-addext",
    "keyUsage=critical,digitalSignature",
    "-addext",
    "extendedKeyUsage=serverAuth",
  ];
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(":");
}

/** Runs `relay cert`; resolves to the exit code. */
export async function main(args: string[]): Promise<number> {
  const flags = parseCommand(args, SPEC);
  if (!flags) return 0;
  const hosts = flags.list("host").flatMap((h) => h.split(",")).map((h) => h.trim())
    .filter(Boolean);
  if (hosts.length === 0) {
    throw new UsageError("Missing --host: give each name or IP clients connect to");
  }
  for (const h of hosts) {
    parseHost(h, "--host");
    if (/[/,]/.test(h)) throw new UsageError(`Invalid --host ${JSON.stringify(h)}`);
  }
  const cert = flags.string("cert")!;
  const key = flags.string("key")!;
  const days = flags.count("days")!;
  if (!flags.boolean("force")) {
    for (const path of [cert, key]) {
      if (await exists(path)) {
        throw new UsageError(`${path} exists; give --force to overwrite it`);
      }
    }
  }
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", {
      args: opensslArgs(hosts, cert, key, days),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "relay cert needs openssl, which is not installed (apt install openssl, brew install " +
          "openssl); docs/SELF_HOSTING.md has the command to run elsewhere",
      );
    }
    throw new Error(`Cannot run openssl: ${describeError(error)}`);
  }
  if (!output.success) {
    const why = new TextDecoder().decode(output.stderr).trim().split("\n").slice(-1)[0];
    throw new Error(`openssl failed: ${why}`);
  }
  console.error(`Wrote ${cert} (certificate for ${hosts.join(", ")}, ${days} days) and ${key}`);
  console.error(`Serve:   relay serve --tls-cert ${cert} --tls-key ${key}`);
  console.error(`Clients: --ca ${cert}`);
  return 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}
