/**
 * What is wrong with an image the user named (a bad tar, a wrong digest, a size over the limit).
 * The helpers of lib/image throw it with the detail only; `prepareImage` turns it into a
 * `UsageError` "Cannot prepare image REF: <detail>".
 * @module
 */

/** A problem with the image's content; `message` is the detail, e.g. "layer 2: …". */
export class ImageInputError extends Error {
  /** Builds the error from the detail. */
  constructor(detail: string, options?: { cause?: unknown }) {
    super(detail, options);
    this.name = "ImageInputError";
  }
}

/** The image unpacks to more than the size limit. */
export class OverLimitError extends ImageInputError {
  /** Builds "it unpacks to more than N MiB, the size limit". */
  constructor(maxBytes: number) {
    super(`it unpacks to more than ${Math.floor(maxBytes / 2 ** 20)} MiB, the size limit`);
    this.name = "OverLimitError";
  }
}
