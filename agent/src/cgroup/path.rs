//! Cgroup paths as trees: containment and ancestry, for the sampler (limits
//! of ancestors, removal of subtrees) and kill attribution (a pod's notice
//! belongs to its containers' kill). What a path says about a pod lives in
//! [`crate::pods::path`].

/// Whether cgroup `path` lies strictly below `ancestor` (`/a/b` is below
/// `/a`; `/ab` is not).
pub fn is_below(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The ancestors of a cgroup path, nearest first, without the root `/`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.rmatch_indices('/')
        .map(move |(at, _)| &path[..at])
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_and_ancestors() {
        assert!(is_below("/kubepods/pod1/c1", "/kubepods/pod1"));
        assert!(is_below("/kubepods/pod1/c1", "/kubepods"));
        assert!(!is_below("/kubepods/pod1", "/kubepods/pod1"));
        assert!(!is_below("/kubepods/pod10", "/kubepods/pod1"));
        assert!(!is_below("/kubepods", "/"));
        assert_eq!(
            ancestors("/kubepods/pod1/c1").collect::<Vec<_>>(),
            ["/kubepods/pod1", "/kubepods"]
        );
        assert_eq!(ancestors("/kubepods").count(), 0);
    }
}
