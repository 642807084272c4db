/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4), for tests: every
 * line must be a HELP, a TYPE or a sample of a declared family, or the parse throws.
 * @module
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parsed exposition text. */
export interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)/y;

/** Parses `text`; throws on any line that is not valid. */
export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  if (!text.endsWith("\n")) throw new SyntaxError("The exposition does not end with a newline");
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("# HELP ")) {
      const name = line.slice(7).split(" ")[0];
      if (!NAME.test(name)) throw new SyntaxError(`Bad HELP line: ${line}`);
      continue;
    }
    if (line.startsWith("# TYPE ")) {
      const [name, type] = line.slice(7).split(" ");
      if (!NAME.test(name) || !/^(counter|gauge|histogram|summary|untyped)$/.test(type)) {
        throw new SyntaxError(`Bad TYPE line: ${line}`);
      }
      if (types.has(name)) throw new SyntaxError(`Second TYPE for ${name}`);
      types.set(name, type);
      continue;
    }
    if (line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) throw new SyntaxError(`Bad sample line: ${line}`);
    const [, name, labelText, valueText] = match;
    const labels: Record<string, string> = {};
    if (labelText) {
      LABEL.lastIndex = 0;
      while (LABEL.lastIndex < labelText.length) {
        const at = LABEL.lastIndex;
        const label = LABEL.exec(labelText);
        if (!label || label.index !== at) throw new SyntaxError(`Bad labels: ${line}`);
        labels[label[1]] = label[2];
        if (label[3] === "") break;
      }
    }
    const value = valueText === "+Inf"
      ? Infinity
      : valueText === "-Inf"
      ? -Infinity
      : Number(valueText);
    if (Number.isNaN(value) && valueText !== "NaN") throw new SyntaxError(`Bad value: ${line}`);
    const family = familyOf(name, types);
    if (family === undefined) throw new SyntaxError(`Sample of an undeclared family: ${line}`);
    samples.push({ name, labels, value });
  }
  for (const [name, type] of types) {
    if (type !== "histogram") continue;
    const buckets = samples.filter((s) => s.name === `${name}_bucket`);
    const count = samples.find((s) => s.name === `${name}_count`)?.value;
    for (let i = 1; i < buckets.length; i++) {
      if (buckets[i].value < buckets[i - 1].value) throw new SyntaxError(`${name}: not cumulative`);
    }
    if (buckets.at(-1)?.labels.le !== "+Inf" || buckets.at(-1)?.value !== count) {
      throw new SyntaxError(`${name}: the +Inf bucket is not the count`);
    }
  }
  return { types, samples };
}

function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ["_bucket", "_sum", "_count", "_total"]) {
    if (name.endsWith(suffix) && types.has(name.slice(0, -suffix.length))) {
      return name.slice(0, -suffix.length);
    }
  }
  return undefined;
}

/** The value of the sample `name` with exactly these labels (among others), or undefined. */
export function value(
  exposition: Exposition,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  return exposition.samples.find((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  )?.value;
}
