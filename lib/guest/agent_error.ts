/**
 * The error the guest agent client raises.
 * @module
 */
import { VmfactoryError } from "../errors.ts";

/** Why an agent call failed. */
export type AgentErrorCode =
  | "connect" // the socket could not be reached
  | "timeout" // no answer in time
  | "closed" // the connection ended before the answer
  | "remote" // the agent answered with an error
  | "protocol" // the answer was malformed, too large or not what was asked
  | "request" // the call was refused before it was sent (a bad argument), or its callback threw
  | "busy"; // too many calls already wait for an answer

/**
 * A failed agent call; `code` says why, the message reads "Cannot <action>: <detail>".
 * @example
 * ```ts
 * await agent.exec(["sleep", "10"], { timeoutMs: 100 }).catch((err) => {
 *   if (err instanceof AgentError && err.code === "timeout") console.error("too slow");
 * });
 * ```
 */
export class AgentError extends VmfactoryError {
  /** Why the call failed. */
  readonly code: AgentErrorCode;
  /** Builds the error; `cause` keeps the underlying socket error, if any. */
  constructor(
    action: string,
    detail: string,
    code: AgentErrorCode,
    options?: { cause?: unknown; exitCode?: number },
  ) {
    super(action, detail, options);
    this.code = code;
  }
}

/**
 * A shell's exit code for the agent's answer to an exec whose command could not start: 127 when
 * its program is not found, 126 when it cannot be executed (as sh and `docker run` exit);
 * undefined for every other failure.
 */
export function startFailureExitCode(answer: string): number | undefined {
  const m = /^exec: cannot run .*: (.*)$/.exec(answer);
  if (!m) return undefined;
  return /No such file|not found/i.test(m[1]) ? 127 : 126;
}
