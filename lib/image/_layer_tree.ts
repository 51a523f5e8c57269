/**
 * The file tree an image's layers make, built from their tar headers alone (no file is written):
 * layers are applied in order, a later entry replaces an earlier one at the same path (folders
 * merge), and OCI whiteouts delete what lower layers put there (`.wh.NAME` deletes NAME,
 * `.wh..wh..opq` empties its folder of everything from lower layers). Entries are hostile input:
 * a `..` name is refused, an absolute one lands inside the root, and an entry below a symbolic
 * link or a file (`link/x` after `link -> /etc`) is refused, so the tree that is unpacked never
 * has a path through a link. A hard link must name an entry already in the tree.
 *
 * {@link LayerTree.plan} then lists what to write: every data-less entry (folders, parents first,
 * then symbolic links, devices and FIFOs), and for each file entry whose data survives, the
 * paths that share it (the first gets the data, the others are hard links to it).
 * @module
 */
import { ImageInputError } from "./_image_input_error.ts";
import type { TarEntry } from "./_tar_reader.ts";
import { displayName, memberPath } from "./_tar_names.ts";
import type { TarHeader } from "./_tar_writer.ts";

/** Owner, mode, time and xattrs of an entry. */
interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  xattrs: Map<string, Uint8Array>;
}

/** A file's content and metadata, shared by its hard links; its data is member `member` of `layer`. */
export interface Inode extends Meta {
  /** Layer index (0 = lowest). */
  layer: number;
  /** Index of the member among the layer's entries. */
  member: number;
  /** Data bytes. */
  size: number;
}

type Special = "symlink" | "char" | "block" | "fifo";
type Dir = { kind: "dir"; layer: number; meta: Meta; children: Map<string, Node> };
type Node =
  | Dir
  | { kind: "file"; layer: number; inode: Inode }
  | {
    kind: Special;
    layer: number;
    meta: Meta;
    linkname: string;
    devmajor: number;
    devminor: number;
  };

/** What {@link LayerTree.plan} returns. */
export interface TreePlan {
  /** Folders (parents first; the root is "."), then links, devices and FIFOs. */
  headers: TarHeader[];
  /** Surviving file data by `"<layer>:<member>"`: the inode and the paths that share it. */
  files: Map<string, { inode: Inode; paths: string[] }>;
  /** Bytes of surviving file data. */
  bytes: number;
}

/** Default cap on entries over all layers (folders made for them count too). */
export const MAX_ENTRIES = 1_000_000;
/** Cap on the bytes of extended attributes over all layers. */
const MAX_XATTR_BYTES = 16 << 20;

function metaOf(e: TarEntry): Meta {
  return { mode: e.mode, uid: e.uid, gid: e.gid, mtime: e.mtime, xattrs: e.xattrs };
}

/** Builds the tree layer by layer; see the module doc. */
export class LayerTree {
  #root: Dir = {
    kind: "dir",
    layer: -1,
    meta: { mode: 0o755, uid: 0, gid: 0, mtime: 0, xattrs: new Map() },
    children: new Map(),
  };
  #entries = 0;
  #xattrBytes = 0;
  #maxEntries: number;

  /** At most `maxEntries` entries over all layers (default {@link MAX_ENTRIES}). */
  constructor(maxEntries = MAX_ENTRIES) {
    this.#maxEntries = maxEntries;
  }

  /**
   * Applies member `member` of layer `layer` (layers in increasing order, members in archive
   * order). Whiteouts apply to lower layers only.
   * @throws ImageInputError for a `..` name, an entry below a link or file, a bad hard link.
   */
  add(entry: TarEntry, layer: number, member: number): void {
    this.#count();
    for (const [name, value] of entry.xattrs) {
      this.#xattrBytes += name.length + value.length;
      if (this.#xattrBytes > MAX_XATTR_BYTES) {
        throw new ImageInputError(`the image has more than ${MAX_XATTR_BYTES >> 20} MiB of xattrs`);
      }
    }
    const parts = memberPath(entry.name);
    const name = parts.pop();
    if (name?.startsWith(".wh.")) {
      if (name === ".wh..wh..opq") this.#purgeLower(this.#parent(parts, layer, entry), layer);
      else if (!name.startsWith(".wh..wh.") && name.length > 4) {
        this.#whiteout(parts, name.slice(4), layer);
      }
      return;
    }
    if (name === undefined) { // the root folder itself
      if (entry.type !== "dir") throw new ImageInputError("the image root is not a folder");
      this.#root.meta = metaOf(entry);
      return;
    }
    const parent = this.#parent(parts, layer, entry);
    const old = parent.children.get(name);
    let node: Node;
    switch (entry.type) {
      case "dir":
        if (old?.kind === "dir") {
          old.meta = metaOf(entry);
          old.layer = layer;
          return;
        }
        node = { kind: "dir", layer, meta: metaOf(entry), children: new Map() };
        break;
      case "file":
        node = {
          kind: "file",
          layer,
          inode: { ...metaOf(entry), layer, member, size: entry.size },
        };
        break;
      case "link": {
        const target = this.#find(memberPath(entry.linkname), entry);
        if (target === old && old) return; // a link to itself
        node = { ...target, layer } as Node;
        break;
      }
      default:
        node = {
          kind: entry.type,
          layer,
          meta: metaOf(entry),
          linkname: entry.linkname,
          devmajor: entry.devmajor,
          devminor: entry.devminor,
        };
    }
    parent.children.set(name, node);
  }

  /** Counts one more node (an entry, or a folder made for one). */
  #count(): void {
    if (++this.#entries > this.#maxEntries) {
      throw new ImageInputError(`the image has more than ${this.#maxEntries} entries`);
    }
  }

  /** The folder `parts`, made (as a plain 0755 root folder) where missing. */
  #parent(parts: string[], layer: number, entry: TarEntry): Dir {
    let dir = this.#root;
    for (const [i, part] of parts.entries()) {
      let next = dir.children.get(part);
      if (!next) {
        this.#count();
        next = {
          kind: "dir",
          layer,
          meta: { mode: 0o755, uid: 0, gid: 0, mtime: entry.mtime, xattrs: new Map() },
          children: new Map(),
        };
        dir.children.set(part, next);
      }
      if (next.kind !== "dir") {
        const what = next.kind === "symlink" ? "symbolic link" : next.kind;
        throw new ImageInputError(
          `the member ${displayName(entry.name)} lies below the ${what} ${
            displayName(parts.slice(0, i + 1).join("/"))
          }`,
        );
      }
      dir = next;
    }
    return dir;
  }

  /** The hard link target `parts`: an existing entry that is not a folder. */
  #find(parts: string[], entry: TarEntry): Node {
    let node: Node | undefined = this.#root;
    for (const part of parts) node = node?.kind === "dir" ? node.children.get(part) : undefined;
    if (!node || node.kind === "dir") {
      throw new ImageInputError(
        `the hard link ${displayName(entry.name)} names ${displayName(entry.linkname)}, which is ${
          node ? "a folder" : "not in the image before it"
        }`,
      );
    }
    return node;
  }

  #whiteout(parts: string[], name: string, layer: number): void {
    let dir: Node | undefined = this.#root;
    for (const part of parts) dir = dir?.kind === "dir" ? dir.children.get(part) : undefined;
    if (dir?.kind !== "dir") return;
    const node = dir.children.get(name);
    if (!node) return;
    if (node.layer < layer) dir.children.delete(name);
    else if (node.kind === "dir") this.#purgeLower(node, layer);
  }

  /** Removes from `dir` everything that lower layers put there. */
  #purgeLower(dir: Dir, layer: number): void {
    for (const [name, node] of dir.children) {
      if (node.layer < layer) dir.children.delete(name);
      else if (node.kind === "dir") this.#purgeLower(node, layer);
    }
  }

  /** What to write; see the module doc. Paths are sorted, so the plan is deterministic. */
  plan(): TreePlan {
    const folders: TarHeader[] = [];
    const others: TarHeader[] = [];
    const files = new Map<string, { inode: Inode; paths: string[] }>();
    let bytes = 0;
    const visit = (dir: Dir, path: string) => {
      folders.push({ name: path || ".", type: "dir", size: 0, ...dir.meta });
      const names = [...dir.children.keys()].sort();
      for (const name of names) {
        const node = dir.children.get(name)!;
        const child = path ? `${path}/${name}` : name;
        if (node.kind === "dir") visit(node, child);
        else if (node.kind === "file") {
          const key = `${node.inode.layer}:${node.inode.member}`;
          const group = files.get(key);
          if (group) group.paths.push(child);
          else {
            files.set(key, { inode: node.inode, paths: [child] });
            bytes += node.inode.size;
          }
        } else {
          others.push({
            name: child,
            type: node.kind,
            size: 0,
            ...node.meta,
            linkname: node.linkname,
            devmajor: node.devmajor,
            devminor: node.devminor,
          });
        }
      }
    };
    visit(this.#root, "");
    return { headers: [...folders, ...others], files, bytes };
  }
}
