//! Connection accounting: sockets open, logins connected in total and per
//! login. Plain bookkeeping; the server keeps it behind a mutex.

use std::collections::HashMap;

use super::login::Bucket;

/// Sockets allowed beyond `max_connections` while they have not logged in
/// yet: room to read the CONNECT of a client past the limit and answer it
/// with a CONNACK that says why, instead of a bare close. Past this room a
/// new socket is closed at once.
pub const HANDSHAKE_ROOM: usize = 64;

/// Why a login that passed its password check is not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `mqtt.max_connections` clients are connected.
    Total,
    /// The login has `mqtt.max_connections_per_user` connections.
    PerUser,
}

/// Counts of what is open now, against the configured caps.
#[derive(Debug)]
pub struct Limits {
    max_connections: usize,
    per_user: usize,
    sockets: usize,
    connected: usize,
    /// Keys are configured users and [`Bucket::Anonymous`] only: bounded
    /// by the configuration, whatever clients send.
    buckets: HashMap<Bucket, usize>,
}

impl Limits {
    /// Caps of `max_connections` clients, `per_user` of each login.
    pub fn new(max_connections: usize, per_user: usize) -> Self {
        Self {
            max_connections,
            per_user,
            sockets: 0,
            connected: 0,
            buckets: HashMap::new(),
        }
    }

    /// Takes a place for a new socket; false when even the handshake room
    /// is full.
    pub fn open_socket(&mut self) -> bool {
        if self.sockets >= self.max_connections.saturating_add(HANDSHAKE_ROOM) {
            return false;
        }
        self.sockets += 1;
        true
    }

    /// Gives back a socket's place.
    pub fn close_socket(&mut self) {
        self.sockets = self.sockets.saturating_sub(1);
    }

    /// Lets a logged-in client in, or says which cap it hit. Anonymous
    /// clients (only possible without logins) share one bucket that
    /// only `max_connections` limits: nothing tells one device from another.
    pub fn admit(&mut self, bucket: &Bucket) -> Result<(), Full> {
        if self.connected >= self.max_connections {
            return Err(Full::Total);
        }
        let count = self.buckets.get(bucket).copied().unwrap_or(0);
        if matches!(bucket, Bucket::User(_)) && count >= self.per_user {
            return Err(Full::PerUser);
        }
        self.buckets.insert(bucket.clone(), count + 1);
        self.connected += 1;
        Ok(())
    }

    /// A client let in by [`Limits::admit`] has gone.
    pub fn leave(&mut self, bucket: &Bucket) {
        self.connected = self.connected.saturating_sub(1);
        if let Some(count) = self.buckets.get_mut(bucket) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.buckets.remove(bucket);
            }
        }
    }

    /// Clients connected now.
    #[cfg(test)]
    pub fn connected(&self) -> usize {
        self.connected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Bucket {
        Bucket::User(name.to_owned())
    }

    #[test]
    fn each_login_has_its_own_cap_under_the_total() {
        let mut limits = Limits::new(4, 2);
        assert_eq!(limits.admit(&user("a")), Ok(()));
        assert_eq!(limits.admit(&user("a")), Ok(()));
        assert_eq!(limits.admit(&user("a")), Err(Full::PerUser));
        assert_eq!(limits.admit(&user("b")), Ok(()));
        assert_eq!(limits.admit(&user("b")), Ok(()));
        assert_eq!(limits.admit(&user("c")), Err(Full::Total));
        assert_eq!(limits.connected(), 4);
        limits.leave(&user("a"));
        assert_eq!(limits.admit(&user("c")), Ok(()));
        assert_eq!(limits.admit(&user("a")), Err(Full::Total));
    }

    #[test]
    fn anonymous_clients_are_limited_by_the_total_only() {
        let mut limits = Limits::new(3, 1);
        for _ in 0..3 {
            assert_eq!(limits.admit(&Bucket::Anonymous), Ok(()));
        }
        assert_eq!(limits.admit(&Bucket::Anonymous), Err(Full::Total));
        for _ in 0..3 {
            limits.leave(&Bucket::Anonymous);
        }
        assert_eq!(limits.connected(), 0);
        assert!(limits.buckets.is_empty(), "no key outlives its connections");
    }

    #[test]
    fn sockets_get_a_handshake_room_past_the_cap_and_no_more() {
        let mut limits = Limits::new(2, 1);
        for _ in 0..2 + HANDSHAKE_ROOM {
            assert!(limits.open_socket());
        }
        assert!(!limits.open_socket());
        limits.close_socket();
        assert!(limits.open_socket());
    }
}
