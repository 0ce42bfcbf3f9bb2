//! Lease requests the members propose themselves (never a client): revokes
//! by expiry and remaining-TTL checkpoints (a keep-alive that renews a
//! checkpointed lease proposes a checkpoint of 0 to clear it). They travel in entries of kind `KIND_INTERNAL`
//! (`entry.rs`), whose body is:
//!
//! ```text
//! op u8 | count u32 LE | count x item
//! op 1 revoke-expired   item = id i64 LE
//! op 2 checkpoint       item = id i64 LE | remaining_ttl i64 LE
//! ```
//! A body that does not parse exactly is refused at apply (never guessed).

/// Most items in one internal entry (bounds the decoder's allocation).
pub const MAX_ITEMS: usize = 4096;

const OP_REVOKE: u8 = 1;
const OP_CHECKPOINT: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Internal {
    /// The leader found these leases expired.
    RevokeExpired(Vec<i64>),
    /// `(id, remaining_ttl seconds)` measured on the leader; 0 clears.
    Checkpoint(Vec<(i64, i64)>),
}

impl Internal {
    pub fn encode(&self) -> Vec<u8> {
        let (op, ids): (u8, Vec<(i64, Option<i64>)>) = match self {
            Internal::RevokeExpired(ids) => (OP_REVOKE, ids.iter().map(|&i| (i, None)).collect()),
            Internal::Checkpoint(cps) => (
                OP_CHECKPOINT,
                cps.iter().map(|&(i, r)| (i, Some(r))).collect(),
            ),
        };
        let mut out = Vec::with_capacity(5 + ids.len() * 16);
        out.push(op);
        out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
        for (id, remaining) in ids {
            out.extend_from_slice(&id.to_le_bytes());
            if let Some(r) = remaining {
                out.extend_from_slice(&r.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(b: &[u8]) -> Result<Internal, String> {
        let (&op, rest) = b.split_first().ok_or("empty internal entry")?;
        let count_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|c| c.try_into().ok())
            .ok_or("internal entry without a count")?;
        let count = u32::from_le_bytes(count_bytes) as usize;
        if count > MAX_ITEMS {
            return Err(format!("internal entry of {count} items (max {MAX_ITEMS})"));
        }
        let items = &rest[4..];
        let item_len = match op {
            OP_REVOKE => 8,
            OP_CHECKPOINT => 16,
            other => return Err(format!("unknown internal lease op {other}")),
        };
        if items.len() != count * item_len {
            return Err(format!(
                "internal lease op {op}: {} bytes for {count} items",
                items.len()
            ));
        }
        let at = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&items[i..i + 8]);
            i64::from_le_bytes(x)
        };
        Ok(match op {
            OP_REVOKE => Internal::RevokeExpired((0..count).map(|i| at(i * 8)).collect()),
            _ => Internal::Checkpoint((0..count).map(|i| (at(i * 16), at(i * 16 + 8))).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for m in [
            Internal::RevokeExpired(vec![1, -2, i64::MAX]),
            Internal::RevokeExpired(vec![]),
            Internal::Checkpoint(vec![(5, 60), (7, 1)]),
        ] {
            assert_eq!(Internal::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn garbage_is_refused() {
        assert!(Internal::decode(b"").is_err());
        assert!(Internal::decode(&[1, 1]).is_err());
        assert!(Internal::decode(&[9, 0, 0, 0, 0]).is_err());
        let mut b = Internal::Checkpoint(vec![(5, 60)]).encode();
        b.pop();
        assert!(Internal::decode(&b).is_err());
        let mut huge = vec![OP_REVOKE];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Internal::decode(&huge).is_err());
    }
}
