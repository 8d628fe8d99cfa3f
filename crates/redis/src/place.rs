//! Where a flight is in the store, as one replica can tell another: what a client needs to
//! resume its stream on any replica of the fleet (R18 across replicas).

use std::fmt;
use std::str::FromStr;

use crate::names::Names;
use crate::seal::Seal;

/// One flight's place in the store: the hash of its key, its leader's token, and the key that
/// opens its entries. Shown as text for a replica to hand to another;
/// [`Fleet::replay`](crate::Fleet::replay) follows it.
///
/// The text holds no part of the flight key (R24), but it does hold the key that opens the
/// flight's answer in the store: keep it as the answer is kept. The gateway hands it over
/// only inside a note ([`Fleet::save`](crate::Fleet::save)), which is sealed with a key only
/// the resuming client's request id gives. Its `Debug` form does not show the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Place {
    pub(crate) names: Names,
    pub(crate) token: String,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}:", self.names.base(), self.token)?;
        self.names.seal_key().bytes().iter().try_for_each(|byte| write!(f, "{byte:02x}"))
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

    /// The inverse of `Display`: `<prefix>{<64 hex>}:<32 hex>:<64 hex>` (the hash of the key,
    /// the leader's token, the flight's seal).
    fn from_str(text: &str) -> Result<Place, ParsePlaceError> {
        let (text, sealed) = text.rsplit_once(':').ok_or(ParsePlaceError)?;
        let seal: [u8; 32] = crate::hex::decode_array(sealed).ok_or(ParsePlaceError)?;
        let split = text.rfind("}:").ok_or(ParsePlaceError)? + 2;
        let (base, token) = text.split_at(split);
        let hex = |text: &str, len: usize| text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit());
        let digest = base.rfind('{').map(|open| &base[open + 1..base.len() - 2]);
        if !hex(token, 32) || !digest.is_some_and(|digest| hex(digest, 64)) {
            return Err(ParsePlaceError);
        }
        let names = Names::from_base(base.to_owned(), Seal::from_bytes(seal));
        Ok(Place { names, token: token.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::Place;
    use crate::FleetConfig;

    #[test]
    fn a_place_reads_back_as_shown_with_its_seal_and_nothing_else_reads_as_one() {
        let names = FleetConfig::default().secret("s").names(b"key");
        let place = Place { names, token: "0123456789abcdef0123456789abcdef".into() };
        let shown = place.to_string();
        let read: Place = shown.parse().unwrap();
        assert_eq!(read, place.clone());
        // The seal came along: what the flight's leader sealed, the reader of the place opens.
        let sealed = place.names.seal_item(&place.token, 1, b"an item");
        assert_eq!(read.names.open_item(&read.token, 1, &sealed).as_deref(), Some(&b"an item"[..]));
        assert!(!format!("{place:?}").contains(&shown[shown.len() - 64..]), "Debug hides the seal");
        let token = "0123456789abcdef0123456789abcdef";
        let seal = "ab".repeat(32);
        let base = &shown[..shown.len() - 32 - 1 - 64];
        for bad in [
            "".to_owned(),
            "sf:".to_owned(),
            shown[..shown.len() - 1].to_owned(),
            shown.replace('{', "("),
            format!("sf:{{00}}:{token}:{seal}"),
            format!("{base}{token}"),
            format!("{base}{token}:{}", &seal[1..]),
            format!("{base}{token}:{}", seal.replace('a', "g")),
            format!("{base}{}:{seal}", &token[1..]),
            format!("{base}{token}:{seal}:{seal}"),
            format!("{base}{token}:+b{}", &seal[2..]),
        ] {
            assert!(bad.parse::<Place>().is_err(), "{bad}");
        }
        assert!(format!("{base}{token}:{seal}").parse::<Place>().is_ok());
    }
}
