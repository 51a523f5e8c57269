/**
 * The daemon's log: one line per event on stderr, as text (the message, then `key=value` fields;
 * systemd's journal adds the time) or as JSON lines (`{"time","level","msg",...fields}`) for log
 * shippers. Library code that logs plain lines (`(line) => void`) goes through
 * {@link DaemonLog.line}, which picks the level from the line's wording.
 * @module
 */

/** How log lines are written. */
export type LogFormat = "text" | "json";

/** How much a line matters. */
export type LogLevel = "info" | "warn" | "error";

/** The formats `--log-format` accepts. */
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];

const RESERVED = new Set(["time", "level", "msg"]);
const TEXT_PREFIX: Record<LogLevel, string> = { info: "", warn: "warning: ", error: "error: " };

/**
 * Writes log lines in one format.
 * @example
 * ```ts
 * const log = new DaemonLog("json");
 * log.info("listening", { socket: "/run/vmfactory/vmfactory.sock" });
 * // {"time":"2026-12-01T11:00:00.000Z","level":"info","msg":"listening","socket":"/run/…"}
 * ```
 */
export class DaemonLog {
  /** A log in `format`, written by `write` (default: a line on stderr). */
  constructor(
    readonly format: LogFormat = "text",
    readonly write: (line: string) => void = (line) => console.error(line),
    readonly now: () => Date = () => new Date(),
  ) {}

  /** Writes `msg` with `fields` (those not undefined) at `level`. */
  log(level: LogLevel, msg: string, given: Record<string, unknown> = {}): void {
    const fields = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined));
    if (this.format === "json") {
      const rest = Object.fromEntries(
        Object.entries(fields).map(([k, v]) => [RESERVED.has(k) ? `field_${k}` : k, v]),
      );
      this.write(JSON.stringify({ time: this.now().toISOString(), level, msg, ...rest }, jsonSafe));
      return;
    }
    const text = Object.entries(fields).map(([k, v]) => ` ${k}=${textValue(v)}`).join("");
    this.write(`${TEXT_PREFIX[level]}${msg}${text}`.replace(/\n/g, "\n  "));
  }

  /** An event. */
  info(msg: string, fields?: Record<string, unknown>): void {
    this.log("info", msg, fields);
  }

  /** Something went wrong and was worked around. */
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log("warn", msg, fields);
  }

  /** Something failed. */
  error(msg: string, fields?: Record<string, unknown>): void {
    this.log("error", msg, fields);
  }

  /**
   * A plain line from library code: "warning: …" and lines saying something failed are warnings,
   * "error: …" and "Cannot …" errors, the rest information. As text (without fields) it is
   * written as it is; in JSON a "warning: "/"error: " prefix is dropped (the level says it).
   */
  line = (line: string, fields?: Record<string, unknown>): void => {
    if (this.format === "text" && !fields) return this.write(line.replace(/\n/g, "\n  "));
    const prefix = /^(warning|error): /.exec(line);
    const msg = prefix ? line.slice(prefix[0].length) : line;
    if (prefix?.[1] === "error" || /^Cannot /.test(line)) this.error(msg, fields);
    else if (prefix || /\bfailed\b/.test(line)) this.warn(msg, fields);
    else this.info(msg, fields);
  };
}

function textValue(v: unknown): string {
  if (typeof v !== "string") return JSON.stringify(v, jsonSafe) ?? String(v);
  return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
}

function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return Number(value);
  if (value instanceof Error) return value.message;
  return value;
}
