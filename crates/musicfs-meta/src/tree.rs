//! The virtual tree: directories and files of the mount, in memory, built from the tracks' virtual paths.
//!
//! Lookups and listings never touch the database or an origin, so `ls` and `stat` stay fast whatever the
//! origins are doing. Children are kept sorted by name, so listings are stable and lookups are binary searches.
//!
//! Memory (5.5): a library keeps one node per track in memory for as long as it is mounted, so nodes hold no
//! heap allocations of their own: names and origin paths live in two shared byte arenas, nodes in a vector
//! indexed by inode number. About 90 bytes per track plus its name and origin path (166 bytes in all at
//! 100 000 tracks with 23-byte names and 52-byte paths: `tests/tree_memory.rs` holds it to a budget), and
//! no fragmentation left behind by loading. [`Tree::heap_bytes`] counts it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const ROOT_INO: u64 = 1;

#[derive(Debug)]
pub enum NodeKind {
    Dir { children: Vec<u64> },
    File(FileNode),
}

/// Where a file's bytes come from. Kept small: a library has one per track, and all of them stay in memory.
#[derive(Debug, Clone, Copy)]
pub struct FileNode {
    pub track_id: i64,
    /// Index into [`Tree::origin_id`].
    pub origin: u16,
    /// The origin path, as a span of the path arena ([`Tree::rel_path`]).
    rel_path: Span,
    pub size: u64,
    pub mtime_ns: i64,
    /// The origin's version stamp (5.6), part of the fingerprint cached chunks are checked against.
    pub version: i64,
}

/// A slice of one of the tree's arenas.
#[derive(Debug, Clone, Copy)]
struct Span {
    at: u32,
    len: u32,
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    /// The name, as a span of the name arena ([`Tree::name`]).
    name: Span,
    pub kind: NodeKind,
}

/// One file of the tree as the database or a sync delivers it.
#[derive(Debug, Clone)]
pub struct TreeRow {
    pub track_id: i64,
    pub origin: String,
    pub rel_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
    pub version: i64,
    pub vpath: String,
    pub ino: u64,
}

/// Inode numbers are small and dense (assigned in sequence), so nodes live in a vector indexed by inode.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: Vec<Option<Node>>,
    names: String,
    paths: Vec<u8>,
    origins: Vec<Box<str>>,
    files: usize,
}

impl Tree {
    /// Builds the tree from file rows; `dirs` must hold a number for every directory on the way.
    pub fn build(rows: impl IntoIterator<Item = TreeRow>, dirs: &HashMap<String, u64>) -> Tree {
        let mut tree = Tree::default();
        let root = Span { at: 0, len: 0 };
        tree.put(Node { ino: ROOT_INO, parent: ROOT_INO, name: root, kind: NodeKind::Dir { children: vec![] } });
        for row in rows {
            tree.add_file(row, dirs);
        }
        tree.sort_children();
        tree
    }

    fn intern_name(&mut self, name: &str) -> Span {
        let span = Span { at: self.names.len() as u32, len: name.len() as u32 };
        self.names.push_str(name);
        span
    }

    /// A node's name.
    pub fn name(&self, node: &Node) -> &str {
        self.names.get(node.name.at as usize..(node.name.at + node.name.len) as usize).unwrap_or("")
    }

    /// A file's path inside its origin.
    pub fn rel_path(&self, file: &FileNode) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        let bytes = self.paths.get(file.rel_path.at as usize..(file.rel_path.at + file.rel_path.len) as usize);
        Path::new(std::ffi::OsStr::from_bytes(bytes.unwrap_or(b"")))
    }

    fn put(&mut self, node: Node) {
        let at = node.ino as usize;
        if self.nodes.len() <= at {
            self.nodes.resize_with(at + 1, || None);
        }
        self.nodes[at] = Some(node);
    }

    fn origin_index(&mut self, origin: &str) -> u16 {
        match self.origins.iter().position(|o| &**o == origin) {
            Some(i) => i as u16,
            None => {
                self.origins.push(origin.into());
                (self.origins.len() - 1) as u16
            }
        }
    }

    fn add_file(&mut self, row: TreeRow, dirs: &HashMap<String, u64>) {
        let Some((dir_path, name)) = row.vpath.rsplit_once('/') else {
            tracing::warn!(vpath = %row.vpath, "track path without a directory; left out of the tree");
            return;
        };
        let mut parent = ROOT_INO;
        let mut end = 0;
        for part in dir_path.split('/') {
            end += part.len();
            let Some(&dir_ino) = dirs.get(&dir_path[..end]) else {
                tracing::warn!(vpath = %row.vpath, "directory without an inode number; track left out of the tree");
                return;
            };
            end += 1;
            if self.get(dir_ino).is_none() {
                let name = self.intern_name(part);
                self.put(Node { ino: dir_ino, parent, name, kind: NodeKind::Dir { children: vec![] } });
                self.push_child(parent, dir_ino);
            }
            parent = dir_ino;
        }
        if self.get(row.ino).is_some() || row.ino == 0 {
            tracing::warn!(vpath = %row.vpath, "inode number already taken; track left out of the tree");
            return;
        }
        let origin = self.origin_index(&row.origin);
        let rel = {
            use std::os::unix::ffi::OsStrExt;
            let bytes = row.rel_path.as_os_str().as_bytes();
            let span = Span { at: self.paths.len() as u32, len: bytes.len() as u32 };
            self.paths.extend_from_slice(bytes);
            span
        };
        let file = FileNode {
            track_id: row.track_id,
            origin,
            rel_path: rel,
            size: row.size,
            mtime_ns: row.mtime_ns,
            version: row.version,
        };
        let name = self.intern_name(name);
        self.put(Node { ino: row.ino, parent, name, kind: NodeKind::File(file) });
        self.push_child(parent, row.ino);
        self.files += 1;
    }

    fn sort_children(&mut self) {
        let spans: Vec<Option<Span>> = self.nodes.iter().map(|n| n.as_ref().map(|n| n.name)).collect();
        let names = &self.names;
        let name = |ino: &u64| {
            spans
                .get(*ino as usize)
                .copied()
                .flatten()
                .and_then(|s| names.get(s.at as usize..(s.at + s.len) as usize))
                .unwrap_or("")
        };
        for node in self.nodes.iter_mut().flatten() {
            if let NodeKind::Dir { children } = &mut node.kind {
                children.sort_by(|a, b| name(a).cmp(name(b)));
                children.shrink_to_fit();
            }
        }
        self.nodes.shrink_to_fit();
        self.names.shrink_to_fit();
        self.paths.shrink_to_fit();
    }

    fn push_child(&mut self, parent: u64, child: u64) {
        if let Some(Some(Node { kind: NodeKind::Dir { children }, .. })) = self.nodes.get_mut(parent as usize) {
            children.push(child);
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?)?.as_ref()
    }

    /// The configured id of the origin a file comes from.
    pub fn origin_id(&self, index: u16) -> Option<&str> {
        self.origins.get(index as usize).map(|o| &**o)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<&Node> {
        let NodeKind::Dir { children } = &self.get(parent)?.kind else { return None };
        let idx =
            children.binary_search_by(|c| self.get(*c).map_or(&b""[..], |n| self.name(n).as_bytes()).cmp(name)).ok()?;
        self.get(children[idx])
    }

    /// Children of a directory in listing order.
    pub fn children(&self, ino: u64) -> Option<impl Iterator<Item = &Node>> {
        let NodeKind::Dir { children } = &self.get(ino)?.kind else { return None };
        Some(children.iter().filter_map(|c| self.get(*c)))
    }

    /// The inode of the file of track `track_id` (a walk over the nodes: for rare lookups only).
    pub fn file_by_track(&self, track_id: i64) -> Option<u64> {
        self.nodes.iter().flatten().find_map(|n| match &n.kind {
            NodeKind::File(f) if f.track_id == track_id => Some(n.ino),
            _ => None,
        })
    }

    pub fn file_count(&self) -> usize {
        self.files
    }

    /// Bytes the tree holds on the heap: its node vector, name and path arenas, children lists and origin
    /// ids, counted by capacity (what the allocator handed out, not what is in use). The library's share of
    /// the daemon's memory (5.5), for a metric; it walks the nodes, about 0.2 ms per 100 000 tracks.
    pub fn heap_bytes(&self) -> usize {
        let children: usize = self
            .nodes
            .iter()
            .flatten()
            .map(|node| match &node.kind {
                NodeKind::Dir { children } => children.capacity() * std::mem::size_of::<u64>(),
                NodeKind::File(_) => 0,
            })
            .sum();
        self.nodes.capacity() * std::mem::size_of::<Option<Node>>()
            + children
            + self.names.capacity()
            + self.paths.capacity()
            + self.origins.capacity() * std::mem::size_of::<Box<str>>()
            + self.origins.iter().map(|o| o.len()).sum::<usize>()
    }

    /// Every directory path (for inode assignment), parents before children.
    pub fn dir_paths_of<'a>(vpaths: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut dirs = std::collections::BTreeSet::new();
        for vpath in vpaths {
            let Some((dir_path, _)) = vpath.rsplit_once('/') else { continue };
            let mut end = 0;
            for part in dir_path.split('/') {
                end += part.len();
                dirs.insert(&dir_path[..end]);
                end += 1;
            }
        }
        dirs.into_iter().map(str::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_sorted_dirs_and_finds_by_name() {
        let vpaths = ["B/X/2.flac", "A/Y/1.flac", "B/X/1.flac"];
        let dirs = Tree::dir_paths_of(vpaths.iter().copied());
        assert_eq!(dirs, vec!["A", "A/Y", "B", "B/X"]);
        let inodes: HashMap<String, u64> = dirs.iter().enumerate().map(|(i, d)| (d.clone(), i as u64 + 2)).collect();
        let rows: Vec<TreeRow> = vpaths
            .iter()
            .enumerate()
            .map(|(i, v)| TreeRow {
                track_id: i as i64,
                origin: "o".into(),
                rel_path: format!("{i}.flac").into(),
                size: 1,
                mtime_ns: 0,
                version: 0,
                vpath: (*v).into(),
                ino: 100 + i as u64,
            })
            .collect();
        let tree = Tree::build(rows, &inodes);
        let names: Vec<&str> = tree.children(ROOT_INO).unwrap().map(|n| tree.name(n)).collect();
        assert_eq!(names, vec!["A", "B"]);
        let b = tree.lookup(ROOT_INO, b"B").unwrap();
        let x = tree.lookup(b.ino, b"X").unwrap();
        let files: Vec<&str> = tree.children(x.ino).unwrap().map(|n| tree.name(n)).collect();
        let NodeKind::File(f) = &tree.lookup(x.ino, b"1.flac").unwrap().kind else { panic!("a file") };
        assert_eq!(tree.rel_path(f), Path::new("2.flac"));
        assert_eq!(files, vec!["1.flac", "2.flac"]);
        assert!(tree.lookup(x.ino, b"3.flac").is_none());
        assert_eq!(tree.file_count(), 3);
    }
}
