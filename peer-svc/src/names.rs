//! Names that look alike (issue 26, item 7). Two different names can be
//! impossible to tell apart on screen: `user1` and `usеr1` (a Cyrillic е),
//! `alice` and `аlice`, `user1` and `userl`. Unicode TR39 maps every
//! character to the one it is confusable with; two names with the same
//! *skeleton* look alike. A peer refuses to invite a name that looks like a
//! member's, and wherever a name that looks like another is shown, its
//! safety number goes beside it.

use std::collections::HashMap;

use unicode_security::confusable_detection::skeleton;

/// The TR39 skeleton of `name`: equal for names that look alike.
pub fn skeleton_of(name: &str) -> String {
    skeleton(name).collect()
}

/// Known names by skeleton: which other name a given one looks like.
#[derive(Debug, Clone, Default)]
pub struct Lookalikes {
    by_skeleton: HashMap<String, Vec<String>>,
    /// Each known name and the other it looks like, worked out once: a
    /// known sender (nearly every line shown) costs one lookup, not a
    /// skeleton.
    known: HashMap<String, Option<String>>,
}

impl Lookalikes {
    /// The skeletons of `names`.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut by_skeleton: HashMap<String, Vec<String>> = HashMap::new();
        for name in names {
            let name = name.into();
            let same = by_skeleton.entry(skeleton_of(&name)).or_default();
            if !same.contains(&name) {
                same.push(name);
            }
        }
        let known = by_skeleton
            .values()
            .flat_map(|same| {
                same.iter().map(|name| {
                    let other = same.iter().find(|n| *n != name).cloned();
                    (name.clone(), other)
                })
            })
            .collect();
        Self { by_skeleton, known }
    }

    /// True if `name` is one of the names known.
    pub fn knows(&self, name: &str) -> bool {
        self.known.contains_key(name)
    }

    /// Another known name that `name` looks like (the same skeleton, not
    /// the same name), if there is one.
    pub fn looks_like(&self, name: &str) -> Option<&str> {
        if let Some(other) = self.known.get(name) {
            return other.as_deref();
        }
        self.by_skeleton
            .get(&skeleton_of(name))?
            .iter()
            .find(|n| n.as_str() != name)
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alike_names_share_a_skeleton_and_different_ones_do_not() {
        // Cyrillic е (U+0435) and а (U+0430); the digit one and the letter l.
        for (a, b) in [
            ("user1", "us\u{0435}r1"),
            ("alice", "\u{0430}lice"),
            ("user1", "userl"),
        ] {
            assert_ne!(a, b);
            assert_eq!(skeleton_of(a), skeleton_of(b), "{a} / {b}");
        }
        for (a, b) in [("user1", "user2"), ("alice", "bob"), ("carol", "caro")] {
            assert_ne!(skeleton_of(a), skeleton_of(b), "{a} / {b}");
        }
    }

    #[test]
    fn a_name_looks_like_another_known_name_not_like_itself() {
        let known = Lookalikes::new(["user1", "alice", "us\u{0435}r1"]);
        assert_eq!(known.looks_like("user1"), Some("us\u{0435}r1"));
        assert_eq!(known.looks_like("us\u{0435}r1"), Some("user1"));
        assert_eq!(known.looks_like("alice"), None);
        assert_eq!(known.looks_like("\u{0430}lice"), Some("alice"));
        assert_eq!(known.looks_like("bob"), None);
        assert!(known.knows("alice") && !known.knows("\u{0430}lice"));
    }
}
