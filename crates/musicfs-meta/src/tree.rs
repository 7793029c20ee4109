//! The virtual tree: directories and files of the mount, in memory, built from the tracks' virtual paths.
//!
//! Lookups and listings never touch the database or an origin, so `ls` and `stat` stay fast whatever the
//! origins are doing. Children are kept sorted by name, so listings are stable and lookups are binary searches.

use crate::db::Track;
use std::collections::HashMap;
use std::path::PathBuf;

pub const ROOT_INO: u64 = 1;

#[derive(Debug)]
pub enum NodeKind {
    Dir { children: Vec<u64> },
    File(FileNode),
}

#[derive(Debug, Clone)]
pub struct FileNode {
    pub track_id: i64,
    pub origin: String,
    pub rel_path: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub name: Box<str>,
    pub kind: NodeKind,
}

#[derive(Debug, Default)]
pub struct Tree {
    nodes: HashMap<u64, Node>,
    files: usize,
}

impl Tree {
    /// Builds the tree; `inodes` must hold a number for every track vpath and every directory on the way.
    pub fn build(tracks: &[Track], inodes: &HashMap<String, u64>) -> Tree {
        let mut tree = Tree::default();
        tree.nodes.insert(
            ROOT_INO,
            Node { ino: ROOT_INO, parent: ROOT_INO, name: "".into(), kind: NodeKind::Dir { children: vec![] } },
        );
        for t in tracks {
            let Some(&ino) = inodes.get(&t.vpath) else {
                tracing::warn!(vpath = %t.vpath, "track without an inode number; left out of the tree");
                continue;
            };
            let mut parent = ROOT_INO;
            let mut prefix_end = 0;
            let parts: Vec<&str> = t.vpath.split('/').collect();
            let mut ok = true;
            for part in &parts[..parts.len() - 1] {
                prefix_end += part.len();
                let dir_path = &t.vpath[..prefix_end];
                prefix_end += 1;
                let Some(&dir_ino) = inodes.get(dir_path) else {
                    ok = false;
                    break;
                };
                if !tree.nodes.contains_key(&dir_ino) {
                    tree.nodes.insert(
                        dir_ino,
                        Node { ino: dir_ino, parent, name: (*part).into(), kind: NodeKind::Dir { children: vec![] } },
                    );
                    tree.push_child(parent, dir_ino);
                }
                parent = dir_ino;
            }
            if !ok || tree.nodes.contains_key(&ino) {
                tracing::warn!(vpath = %t.vpath, "inconsistent virtual path; left out of the tree");
                continue;
            }
            let name = parts[parts.len() - 1];
            tree.nodes.insert(
                ino,
                Node {
                    ino,
                    parent,
                    name: name.into(),
                    kind: NodeKind::File(FileNode {
                        track_id: t.id,
                        origin: t.origin.clone(),
                        rel_path: t.rel_path.clone(),
                        size: t.size,
                        mtime_ns: t.mtime_ns,
                    }),
                },
            );
            tree.push_child(parent, ino);
            tree.files += 1;
        }
        let names: HashMap<u64, Box<str>> = tree.nodes.iter().map(|(ino, n)| (*ino, n.name.clone())).collect();
        for node in tree.nodes.values_mut() {
            if let NodeKind::Dir { children } = &mut node.kind {
                children.sort_by(|a, b| names[a].cmp(&names[b]));
                children.shrink_to_fit();
            }
        }
        tree
    }

    fn push_child(&mut self, parent: u64, child: u64) {
        if let Some(Node { kind: NodeKind::Dir { children }, .. }) = self.nodes.get_mut(&parent) {
            children.push(child);
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<&Node> {
        let NodeKind::Dir { children } = &self.nodes.get(&parent)?.kind else { return None };
        let idx = children.binary_search_by(|c| self.nodes[c].name.as_bytes().cmp(name)).ok()?;
        self.nodes.get(&children[idx])
    }

    /// Children of a directory in listing order.
    pub fn children(&self, ino: u64) -> Option<impl Iterator<Item = &Node>> {
        let NodeKind::Dir { children } = &self.nodes.get(&ino)?.kind else { return None };
        Some(children.iter().filter_map(|c| self.nodes.get(c)))
    }

    pub fn file_count(&self) -> usize {
        self.files
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Every directory path (for inode assignment), parents before children.
    pub fn dir_paths_of(vpaths: &[&str]) -> Vec<String> {
        let mut dirs = std::collections::BTreeSet::new();
        for vpath in vpaths {
            let mut end = 0;
            for part in vpath.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
                end += part.len();
                dirs.insert(vpath[..end].to_owned());
                end += 1;
            }
        }
        dirs.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::TrackTags;

    #[test]
    fn builds_sorted_dirs_and_finds_by_name() {
        let tracks: Vec<Track> = ["B/X/2.flac", "A/Y/1.flac", "B/X/1.flac"]
            .iter()
            .enumerate()
            .map(|(i, v)| Track {
                id: i as i64,
                origin: "o".into(),
                rel_path: format!("{i}.flac").into(),
                size: 1,
                mtime_ns: 0,
                tags: TrackTags::default(),
                vpath: (*v).into(),
            })
            .collect();
        let vpaths: Vec<&str> = tracks.iter().map(|t| t.vpath.as_str()).collect();
        let dirs = Tree::dir_paths_of(&vpaths);
        assert_eq!(dirs, vec!["A", "A/Y", "B", "B/X"]);
        let mut inodes = HashMap::new();
        for (i, p) in dirs.iter().map(|d| d.as_str()).chain(vpaths.iter().copied()).enumerate() {
            inodes.insert(p.to_owned(), i as u64 + 2);
        }
        let tree = Tree::build(&tracks, &inodes);
        let names: Vec<&str> = tree.children(ROOT_INO).unwrap().map(|n| &*n.name).collect();
        assert_eq!(names, vec!["A", "B"]);
        let b = tree.lookup(ROOT_INO, b"B").unwrap();
        let x = tree.lookup(b.ino, b"X").unwrap();
        let files: Vec<&str> = tree.children(x.ino).unwrap().map(|n| &*n.name).collect();
        assert_eq!(files, vec!["1.flac", "2.flac"]);
        assert!(tree.lookup(x.ino, b"3.flac").is_none());
        assert_eq!(tree.file_count(), 3);
    }
}
