/**
 * The errors of the HTTP API and how any thrown value becomes an HTTP answer: a status, a
 * snake_case code and a message, never a stack trace.
 * @module
 */
import { UsageError, VmfactoryError } from "../errors.ts";
import { SourceUnfitError } from "../factory/vm_source.ts";

/**
 * An error with the HTTP status and code the API answers with; a backend throws it to choose
 * them (e.g. 404 for an unknown VM, 409 for one whose QEMU is not running).
 * @example
 * ```ts
 * throw new ApiError(404, "vm_not_found", "find VM 3fa9c0", "no such VM");
 * ```
 */
export class ApiError extends VmfactoryError {
  /** Builds "Cannot <action>: <detail>" answered with `status` and `code`. */
  constructor(
    /** HTTP status. */
    readonly status: number,
    /** snake_case code, the `error.code` of the answer. */
    readonly code: string,
    action: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(action, detail, options);
  }
}

/** What an error is answered with. */
export interface ErrorReply {
  /** HTTP status. */
  status: number;
  /** `error.code`. */
  code: string;
  /** `error.message`. */
  message: string;
  /** True for an error vmfactory did not raise on purpose (its message is logged, not sent). */
  internal: boolean;
}

/**
 * The answer to `err` thrown while serving `action` (e.g. "create a VM"): an {@link ApiError}
 * keeps its status; a {@link SourceUnfitError} is 503 (the factory cannot serve now); another
 * UsageError is 400; another VmfactoryError (a failed operation) 500 with its message; anything
 * else 500 "internal" with a message that says no more than that.
 */
export function errorReply(err: unknown, action: string): ErrorReply {
  const reply = (status: number, code: string, message: string, internal = false) => ({
    status,
    code,
    message,
    internal,
  });
  if (err instanceof ApiError) return reply(err.status, err.code, err.message);
  if (err instanceof SourceUnfitError) return reply(503, "source_unavailable", err.message);
  if (err instanceof UsageError) return reply(400, "bad_request", err.message);
  if (err instanceof VmfactoryError) return reply(500, "failed", err.message);
  return reply(500, "internal", `Cannot ${action}: internal error (see the server's log)`, true);
}
