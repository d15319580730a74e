//! The rules a topology's workers meet together: unique names, unique addresses (port 0,
//! bound later, never clashes) and at most [`MAX_MODELS`] models in all. Checked as workers
//! join one by one: by validation for the `[[worker]]` list, by the running edge for the
//! workers discovery finds (`edge::reload`), so both apply the same rules.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{Config, WorkerEntry};
use crate::route::table::MAX_MODELS;

/// The names, addresses and models of a topology's workers so far.
#[derive(Debug, Default)]
pub struct Members {
    names: HashSet<String>,
    addresses: HashSet<SocketAddr>,
    models: HashSet<String>,
}

/// Why a worker cannot join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conflict {
    /// Another worker has its name.
    Name,
    /// Another worker has its address.
    Address,
    /// Its models would take the topology past [`MAX_MODELS`].
    Models,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::Name => f.write_str("its name is taken by another worker"),
            Conflict::Address => f.write_str("its address is another worker's"),
            Conflict::Models => write!(f, "it would take the topology past {MAX_MODELS} models"),
        }
    }
}

impl Members {
    /// The members of `config`: its workers, and the models its discovery sources name.
    pub fn of(config: &Config) -> Members {
        let mut m = Members::default();
        for w in &config.workers {
            m.names.insert(w.name.clone());
            m.insert_address(w.address);
        }
        m.models = config.models().into_iter().map(str::to_owned).collect();
        m
    }

    /// Records `name`; false if another worker has it.
    pub fn insert_name(&mut self, name: &str) -> bool {
        self.names.insert(name.to_owned())
    }

    /// Records `address`; false if another worker has it.
    pub fn insert_address(&mut self, address: SocketAddr) -> bool {
        address.port() == 0 || self.addresses.insert(address)
    }

    /// Adds `w` if it meets the rules with the members so far; nothing is recorded otherwise.
    pub fn admit(&mut self, w: &WorkerEntry) -> Result<(), Conflict> {
        if self.names.contains(&w.name) {
            return Err(Conflict::Name);
        }
        if w.address.port() != 0 && self.addresses.contains(&w.address) {
            return Err(Conflict::Address);
        }
        let new = (w.models.iter().collect::<HashSet<_>>().into_iter())
            .filter(|m| !self.models.contains(*m))
            .count();
        if self.models.len() + new > MAX_MODELS {
            return Err(Conflict::Models);
        }
        self.insert_name(&w.name);
        self.insert_address(w.address);
        self.models.extend(w.models.iter().cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamTrust;

    fn worker(name: &str, port: u16, models: &[&str]) -> WorkerEntry {
        WorkerEntry {
            name: name.into(),
            region: 0,
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            server_name: "localhost".into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            weight: 1,
            trust: UpstreamTrust::Pin("w.pem".into()),
        }
    }

    #[test]
    fn a_worker_joins_only_within_the_rules() {
        let mut m = Members::default();
        assert_eq!(m.admit(&worker("a", 5000, &["m"])), Ok(()));
        assert_eq!(m.admit(&worker("a", 5001, &["m"])), Err(Conflict::Name));
        assert_eq!(m.admit(&worker("b", 5000, &["m"])), Err(Conflict::Address));
        // Port 0 is bound later: never a clash.
        assert_eq!(m.admit(&worker("b", 0, &["m"])), Ok(()));
        assert_eq!(m.admit(&worker("c", 0, &["m"])), Ok(()));
        let many: Vec<String> = (0..MAX_MODELS).map(|i| format!("x{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(m.admit(&worker("d", 5002, &many)), Err(Conflict::Models));
        // Refused: nothing of it was recorded.
        assert_eq!(m.admit(&worker("d", 5002, &many[..MAX_MODELS - 1])), Ok(()));
        assert_eq!(m.admit(&worker("e", 5003, &["m", "x0"])), Ok(()));
        assert_eq!(m.admit(&worker("f", 5004, &["new"])), Err(Conflict::Models));
    }
}
