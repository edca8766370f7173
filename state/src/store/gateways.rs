//! The table of gateway ids: a session names its gateway by a u16 index into it, the journal
//! records each id the first time it is used, and each entry holds its link's output buffer.

use super::Store;
use crate::record::Record;

pub(super) struct Gateway {
    pub(super) name: Box<str>,
    pub(super) linked: bool,
    /// Bumped by each HELLO; sessions of an older epoch must be re-announced.
    pub(super) epoch: u32,
    /// Frames for this gateway, not yet handed to its link.
    pub(super) out: Vec<u8>,
}

impl Store {
    pub(super) fn intern_gateway(&mut self, name: &str) -> u16 {
        if let Some(&gw) = self.gateway_index.get(name) {
            return gw;
        }
        let gw = self.gateways.len() as u16;
        self.gateways.push(Gateway {
            name: name.into(),
            linked: false,
            epoch: 0,
            out: Vec::new(),
        });
        self.gateway_index.insert(name.into(), gw);
        self.log(Record::Gateway { index: gw, name });
        gw
    }

    /// The index of gateway id `name`, if it was ever seen.
    pub(crate) fn gateway_of(&self, name: &str) -> Option<u16> {
        self.gateway_index.get(name).copied()
    }

    /// Whether one more gateway id fits (indices are u16).
    pub(crate) fn can_add_gateway(&self, name: &str) -> bool {
        self.gateway_index.contains_key(name) || self.gateways.len() < u16::MAX as usize
    }
}
