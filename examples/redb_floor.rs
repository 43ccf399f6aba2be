//! The least CPU a durable stream append can cost on this machine with redb:
//! nothing but redb, one value per commit holding `PER` entries of `SIZE`
//! bytes (as a stream chunk holds one group commit's appends), each commit
//! durable (`Durability::Immediate`: one fdatasync), the process's CPU time
//! (user + system, from /proc/self/stat) per entry. No broker work: the
//! floor under what keeping a stream adds to a QoS 1 publish (#20).
//!
//! ```text
//! cargo run --release --example redb_floor -- [PER=512] [SIZE=100] [COMMITS=2000] [DIR=.]
//! taskset -c 0 target/release/examples/redb_floor 512 100
//! ```

use std::time::Instant;

use redb::{Database, Durability, TableDefinition};

const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("chunks");

/// This process's CPU seconds so far (utime + stime, in clock ticks of 10 ms).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("short /proc/self/stat"))?
            .parse::<f64>()?)
    };
    // Field n (1-based) is at index n - 3 after the command.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn arg(i: usize, default: u64) -> anyhow::Result<u64> {
    Ok(match std::env::args().nth(i) {
        Some(a) => a.parse()?,
        None => default,
    })
}

fn main() -> anyhow::Result<()> {
    let per = arg(1, 512)? as usize;
    let size = arg(2, 100)? as usize;
    let commits = arg(3, 2000)?;
    let dir = std::env::args().nth(4).unwrap_or_else(|| ".".into());
    let path = std::path::Path::new(&dir).join(format!("redb-floor-{}.redb", std::process::id()));
    let db = Database::create(&path)?;
    let entry = vec![7u8; size];
    let mut chunk = Vec::with_capacity(per * (size + 4));
    for durable in [true, false] {
        let (cpu, wall) = (cpu_seconds()?, Instant::now());
        for c in 0..commits {
            chunk.clear();
            for _ in 0..per {
                chunk.extend_from_slice(&(size as u32).to_le_bytes());
                chunk.extend_from_slice(&entry);
            }
            let mut txn = db.begin_write()?;
            if !durable {
                txn.set_durability(Durability::None)?;
            }
            {
                let mut table = txn.open_table(CHUNKS)?;
                let key = if durable { "d" } else { "n" };
                table.insert((key, c * per as u64), chunk.as_slice())?;
            }
            txn.commit()?;
        }
        let cpu = cpu_seconds()? - cpu;
        let entries = (per as u64 * commits) as f64;
        println!(
            "{} commits of {per} x {size} B, {}: {:.3} us CPU per entry, {:.0} us CPU per commit, {:.0} entries/s",
            commits,
            if durable { "durable" } else { "not durable" },
            cpu / entries * 1e6,
            cpu / commits as f64 * 1e6,
            entries / wall.elapsed().as_secs_f64(),
        );
    }
    drop(db);
    std::fs::remove_file(&path)?;
    Ok(())
}
