// Package cache is lifeboat's content-addressed store: blob files named by
// digest and a bbolt index that says what they are. It knows nothing of HTTP,
// upstream registries or metrics.
//
// On disk, below the data directory:
//
//	blobs/<algorithm>/<first two hex>/<hex>   verified content, manifests included
//	ingest/<random>                           a download in progress
//	index.db                                  the bbolt index
//
// The index is drawn here as the bucket tree it is:
//
//	v1                                 root, versioned so the schema can move
//	├── blobs       <digest>           → blobRecord  {size, stored}
//	├── manifests   <digest>           → manifestRecord {mediaType (as its bytes establish it), refs}
//	├── tags        <registry>/<repo>:<tag> → Tag {digest, mediaType, confirmed}
//	├── taglists    <registry>/<repo>  → 0x01, fetched (unix ns, 8 bytes, big endian), {tags, truncated} JSON
//	├── access      <digest>           → last access, unix nanoseconds (8 bytes, big endian)
//	├── pins        <source> <ref>     → Pin {ref, digest, source, pinned}
//	├── tombstones  <digest>           → empty: an evicted blob whose file may still be on disk
//	└── repos       <registry>/<repo>  → RepoAccess {private, checked}: upstream refused an anonymous client
//
// A blob becomes visible only after its bytes were hashed and matched the
// digest, the file was fsynced and renamed into place, and its row was written
// in one bbolt transaction. A crash at any point leaves either nothing or a
// whole, verified blob: Open removes ingest leftovers, drops rows whose file
// is gone or has another size, and adopts a file without a row if its bytes
// hash to its name (a crash between rename and index write), removing it
// otherwise. OpenBlob forgets a blob whose file is missing or no longer has
// the indexed size.
//
// Eviction removes a blob's rows and writes its tombstone in one
// transaction, with commits held off, then unlinks the file and deletes the
// tombstone. A tombstone left behind (a crash, or a pass stopped between
// the two) names a file with no row to remove without re-hashing: Open
// removes it, or the next eviction pass does, unless the digest was
// committed again meanwhile (it has a row again), in which case only the
// tombstone goes.
//
// A remembered tag list keeps at most MaxTagListTags tags and
// MaxTagListBytes: a longer one is truncated and marked so, and never
// served as the whole list. Tag lists count in the store's size; eviction
// removes one fetched TagListMaxAge before its keep cutoff, and under the
// limits' pressure any not fetched since the cutoff, with the orphans.
//
// Last-access times (Touch) and the confirmations of tags that upstream said
// had not moved (ConfirmTag) are kept in memory and written in batches by
// Flush (and on Close), never one bbolt write per request.
package cache
