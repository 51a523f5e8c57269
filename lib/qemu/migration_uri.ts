/** QMP migration URIs for saving to and loading from a file through `exec:cat`. @module */

/** Quotes `path` for the `/bin/sh -c` QEMU runs an `exec:` URI with. */
function shellQuote(path: string): string {
  return `'${path.replaceAll("'", `'\\''`)}'`;
}

/** `migrate` URI that writes the migration stream to `path`. */
export function saveToFileUri(path: string): string {
  return `exec:cat > ${shellQuote(path)}`;
}

/** `migrate-incoming` URI that reads the migration stream from `path`. */
export function loadFromFileUri(path: string): string {
  return `exec:cat ${shellQuote(path)}`;
}
