//! Rate limits per client address for the HTTP intake: a token bucket per
//! address (IPv6 by its /64, which one host or one phone network usually
//! holds whole), in a table of bounded size.
//!
//! A bucket that has refilled is the same as no bucket, so it is forgotten
//! when room is needed; when every bucket in a full table is still in use
//! (a flood from many addresses), the one used longest ago makes room. The
//! table therefore never holds more than its capacity, and a flood from
//! many addresses costs each of them at most a burst.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A sustained rate: `n` requests per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second (may be below one: `"30/m"`).
    pub per_second: f64,
}

impl Rate {
    /// Reads `"50/s"`, `"300/m"` or `"1000/h"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (n, unit) = text.trim().split_once('/')?;
        let n: f64 = n.trim().parse().ok()?;
        let period = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        (n.is_finite() && n > 0.0).then_some(Self {
            per_second: n / period,
        })
    }
}

/// An address range: `127.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The loopback ranges, which the intake's rate limit leaves alone by default.
    pub fn loopback() -> Vec<Net> {
        vec![
            Net {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Net {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }
}

impl FromStr for Net {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("/{p} is not a prefix length from 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One address's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// What [`Buckets::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Take {
    /// Go ahead.
    Allowed,
    /// Refused: the next request may come after this long.
    Limited(Duration),
}

/// Token buckets by client address.
#[derive(Debug)]
pub struct Buckets {
    rate: f64,
    burst: f64,
    capacity: usize,
    table: HashMap<IpAddr, Bucket>,
}

impl Buckets {
    /// `rate` requests per second sustained, `burst` at once, for at most
    /// `capacity` addresses at a time.
    pub fn new(rate: Rate, burst: u32, capacity: usize) -> Self {
        Self {
            rate: rate.per_second,
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(1),
            table: HashMap::new(),
        }
    }

    /// Takes one token of `ip`'s bucket at `now`.
    pub fn take(&mut self, ip: IpAddr, now: Instant) -> Take {
        let key = key_of(ip);
        if !self.table.contains_key(&key) && self.table.len() >= self.capacity {
            self.make_room(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self.table.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Take::Allowed
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Take::Limited(Duration::from_secs_f64(wait.min(86_400.0)))
        }
    }

    /// Addresses in the table now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Forgets buckets that have refilled (they are as good as new); if
    /// none has, the one used longest ago.
    fn make_room(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.table.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        if self.table.len() >= self.capacity {
            if let Some(oldest) = self
                .table
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(ip, _)| *ip)
            {
                self.table.remove(&oldest);
            }
        }
    }
}

/// The bucket's key: an IPv4 address as it is, an IPv6 address by its /64
/// (one host, or one phone operator's customer, usually has a whole /64 and
/// could otherwise take a fresh bucket per request).
fn key_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn rates_read_per_second_minute_or_hour() {
        assert_eq!(Rate::parse("20/s").unwrap().per_second, 20.0);
        assert_eq!(Rate::parse("30/m").unwrap().per_second, 0.5);
        assert_eq!(Rate::parse(" 3600 / h ").unwrap().per_second, 1.0);
        for bad in ["20", "0/s", "-1/s", "x/s", "20/d", "inf/s", "NaN/s"] {
            assert!(Rate::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_burst_goes_through_then_the_rate_holds() {
        let mut b = Buckets::new(Rate::parse("10/s").unwrap(), 5, 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(b.take(a, t0), Take::Allowed);
        }
        // Empty: the next token comes in 100 ms.
        match b.take(a, t0) {
            Take::Limited(wait) => assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}"),
            other => panic!("{other:?}"),
        }
        // Another address has its own bucket.
        assert_eq!(b.take(ip("192.0.2.2"), t0), Take::Allowed);
        // 100 ms later one more, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.take(a, t1), Take::Allowed);
        assert!(matches!(b.take(a, t1), Take::Limited(_)));
        // A long pause refills to the burst, no further.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(b.take(a, t2), Take::Allowed);
        }
        assert!(matches!(b.take(a, t2), Take::Limited(_)));
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket_and_mapped_v4_is_v4() {
        let mut b = Buckets::new(Rate::parse("1/m").unwrap(), 1, 100);
        let t = Instant::now();
        assert_eq!(b.take(ip("2001:db8::1"), t), Take::Allowed);
        assert!(matches!(
            b.take(ip("2001:db8::ffff:2"), t),
            Take::Limited(_)
        ));
        assert_eq!(b.take(ip("2001:db8:0:1::1"), t), Take::Allowed);
        assert_eq!(b.take(ip("192.0.2.9"), t), Take::Allowed);
        assert!(matches!(
            b.take(ip("::ffff:192.0.2.9"), t),
            Take::Limited(_)
        ));
    }

    #[test]
    fn the_table_stays_within_its_capacity_under_a_flood_of_addresses() {
        let mut b = Buckets::new(Rate::parse("1/s").unwrap(), 2, 64);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let addr = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            assert_eq!(
                b.take(addr, t0 + Duration::from_micros(u64::from(i))),
                Take::Allowed
            );
            assert!(b.len() <= 64);
        }
        // A client that keeps its bucket busy is not pushed out by idle
        // ones: refilled buckets go first.
        let mut b = Buckets::new(Rate::parse("1/s").unwrap(), 2, 4);
        let busy = ip("192.0.2.1");
        assert_eq!(b.take(busy, t0), Take::Allowed);
        assert_eq!(b.take(busy, t0), Take::Allowed);
        for i in 0..3u8 {
            assert_eq!(b.take(IpAddr::from([198, 51, 100, i]), t0), Take::Allowed);
        }
        // Three seconds on, the others have refilled; the busy one too
        // (it was emptied at t0 and two tokens take two seconds): all
        // go, and a newcomer makes room without growing the table.
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(b.take(ip("203.0.113.1"), t3), Take::Allowed);
        assert!(b.len() <= 4);
    }

    #[test]
    fn nets_match_their_prefix() {
        let net: Net = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        let one: Net = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all: Net = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));
        let v6: Net = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(Net::loopback().iter().any(|n| n.contains(ip("127.0.0.2"))));
        assert!(Net::loopback().iter().any(|n| n.contains(ip("::1"))));
        assert!("10.0.0.0/33".parse::<Net>().is_err());
        assert!("nonsense/8".parse::<Net>().is_err());
        assert_eq!(
            "10.0.0.0/8".parse::<Net>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
