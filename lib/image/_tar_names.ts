/**
 * Names inside image tars. A tar member name is bytes, not text: it is kept as a "binary string"
 * (one char per byte, 0–255) so that any name, UTF-8 or not, is written back unchanged. Names are
 * hostile input: {@link memberPath} turns one into path components below the image root.
 * @module
 */
import { ImageInputError } from "./_image_input_error.ts";

/** Longest path (bytes) and path component accepted in an image. */
export const MAX_PATH_BYTES = 4096;
const MAX_COMPONENT_BYTES = 255;

/** `bytes` as a binary string (char code = byte). */
export function binaryString(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x4000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x4000));
  }
  return text;
}

/** The bytes of a binary string. */
export function binaryBytes(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/** A binary string fit for a message: UTF-8 decoded, control characters escaped, cut at 200. */
export function displayName(name: string): string {
  const text = new TextDecoder().decode(binaryBytes(name.slice(0, 200)));
  const shown = JSON.stringify(text).slice(1, -1).replace(/[\u007f-\u009f]/g, "?");
  return name.length > 200 ? `${shown}…` : shown;
}

/**
 * The components of member name `name` below the image root: empty and `.` components are
 * dropped, so a leading `/` is neutralised (an absolute name lands inside the image, as GNU tar
 * and Docker do); a `..` component is refused.
 * @throws ImageInputError for `..`, an over-long name or component.
 */
export function memberPath(name: string): string[] {
  if (name.length > MAX_PATH_BYTES) {
    throw new ImageInputError(`the member name ${displayName(name)} is too long`);
  }
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  for (const part of parts) {
    if (part === "..") {
      throw new ImageInputError(
        `the member ${displayName(name)} has a ".." component (it would escape the image root)`,
      );
    }
    if (part.length > MAX_COMPONENT_BYTES) {
      throw new ImageInputError(`the member name ${displayName(name)} has a too long component`);
    }
  }
  return parts;
}
