//! Where a flight is in the store, as one replica can tell another: what a client needs to
//! resume its stream on any replica of the fleet (R18 across replicas).

use std::fmt;
use std::str::FromStr;

use crate::names::Names;

/// One flight's place in the store: the hash of its key and its leader's token. Shown as
/// text (no key in it, R24) for a replica to hand to another, e.g. in a note
/// ([`Fleet::save`](crate::Fleet::save)); [`Fleet::replay`](crate::Fleet::replay) follows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub(crate) names: Names,
    pub(crate) token: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.names.base(), self.token)
    }
}

/// Text that is not a [`Place`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsePlaceError;

impl fmt::Display for ParsePlaceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a flight's place")
    }
}

impl std::error::Error for ParsePlaceError {}

impl FromStr for Place {
    type Err = ParsePlaceError;

    /// The inverse of `Display`: `<prefix>{<64 hex>}:<32 hex>`.
    fn from_str(text: &str) -> Result<Place, ParsePlaceError> {
        let split = text.rfind("}:").ok_or(ParsePlaceError)? + 2;
        let (base, token) = text.split_at(split);
        let hex = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
        let digest = base.rfind('{').map(|open| &base[open + 1..base.len() - 2]);
        if !hex(token, 32) || !digest.is_some_and(|digest| hex(digest, 64)) {
            return Err(ParsePlaceError);
        }
        Ok(Place { names: Names::from_base(base.to_owned()), token: token.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::Place;
    use crate::names::Names;

    #[test]
    fn a_place_reads_back_as_shown_and_nothing_else_reads_as_one() {
        let place =
            Place { names: Names::new("sf:", b"key"), token: "0123456789abcdef0123456789abcdef".into() };
        assert_eq!(place.to_string().parse::<Place>(), Ok(place.clone()));
        let shown = place.to_string();
        for bad in [
            "",
            "sf:",
            &shown[..shown.len() - 1],
            &shown.replace('{', "("),
            "sf:{00}:0123456789abcdef0123456789abcdef",
        ] {
            assert!(bad.parse::<Place>().is_err(), "{bad}");
        }
    }
}
