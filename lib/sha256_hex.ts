/** Content hashes for cache keys. @module */

/**
 * The first `chars` hex digits of the SHA-256 of `text`. Uses WebCrypto: importing node:crypto
 * costs ~40 ms of start-up, which `vm create` would pay.
 */
export async function sha256Hex(text: string, chars = 64): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("")
    .slice(0, chars);
}
