//! The `model` label's values, bounded: the names `--metrics-models` lists, or else the first
//! [`MODELS_CAP`] distinct names seen; any other is `other`, so that clients cannot grow the series.

use std::sync::{Arc, PoisonError, RwLock};

/// Without `--metrics-models`, how many distinct model names get a label of their own.
pub(crate) const MODELS_CAP: usize = 32;

/// Longer names are `other`: a label is no place for a client's essay.
const LONGEST: usize = 100;

/// The label values of models, each made once and shared by every request that names it.
#[derive(Debug)]
pub(crate) struct Models {
    /// `--metrics-models`, if given: the only names labelled.
    listed: Option<Box<[Arc<str>]>>,
    /// Without a list: the names seen so far, at most [`MODELS_CAP`].
    seen: RwLock<Vec<Arc<str>>>,
    other: Arc<str>,
    none: Arc<str>,
}

impl Models {
    /// Labels for the names `listed` (empty: the first [`MODELS_CAP`] seen).
    pub(crate) fn new(listed: &[String]) -> Models {
        let listed = listed.iter().map(|name| name.trim()).filter(|name| !name.is_empty());
        let listed: Box<[Arc<str>]> = listed.map(Arc::from).collect();
        Models {
            listed: (!listed.is_empty()).then_some(listed),
            seen: RwLock::new(Vec::new()),
            other: Arc::from("other"),
            none: Arc::from(""),
        }
    }

    /// The label of `model`: shared, so a request only clones a pointer; empty for none.
    pub(crate) fn label(&self, model: Option<&str>) -> Arc<str> {
        let Some(model) = model else { return Arc::clone(&self.none) };
        let find = |names: &[Arc<str>]| names.iter().find(|name| ***name == *model).cloned();
        if let Some(listed) = &self.listed {
            return find(listed).unwrap_or_else(|| Arc::clone(&self.other));
        }
        if model.len() > LONGEST {
            return Arc::clone(&self.other);
        }
        if let Some(seen) = find(&self.seen.read().unwrap_or_else(PoisonError::into_inner)) {
            return seen;
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have added it since the read.
        if let Some(found) = find(&seen) {
            return found;
        }
        if seen.len() >= MODELS_CAP {
            return Arc::clone(&self.other);
        }
        let label: Arc<str> = Arc::from(model);
        seen.push(Arc::clone(&label));
        label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_names_or_the_first_ones_get_a_label() {
        let listed = Models::new(&["a".to_owned(), " b ".to_owned()]);
        assert_eq!(&*listed.label(Some("a")), "a");
        assert_eq!(&*listed.label(Some("b")), "b");
        assert_eq!(&*listed.label(Some("c")), "other");
        assert_eq!(&*listed.label(None), "");

        let capped = Models::new(&[]);
        for n in 0..MODELS_CAP {
            assert_eq!(&*capped.label(Some(&format!("m{n}"))), format!("m{n}"));
        }
        assert_eq!(&*capped.label(Some("one-too-many")), "other");
        assert_eq!(&*capped.label(Some("m0")), "m0", "a name seen keeps its label");
        assert_eq!(&*Models::new(&[]).label(Some(&"x".repeat(LONGEST + 1))), "other");
        assert_eq!(MODELS_CAP, 32, "--metrics-models's help and the README's flags table say 32");
    }
}
