//! What a format derives from cached upstream content (a rewritten Helm or conda index, a
//! rendered `PyPI` root page, a parsed package list, a repository snapshot), kept per proxy
//! in small named tables owned by its [`Origin`](crate::Origin).
//!
//! Three properties, each against a review finding:
//!
//! - **Bounded**: every table holds at most its capacity, least recently used out first,
//!   entries optionally expiring after a TTL. Upstream documents can be hundreds of MiB,
//!   so a table keeps a few of them, never one per request or per path tried.
//! - **Single flight**: the first request for a key computes it; requests arriving
//!   meanwhile wait for that result instead of parsing the same document again.
//! - **Off the async threads**: parsing runs on tokio's blocking pool or, for checks that
//!   only borrow the bytes, in place with the worker's other tasks handed to another
//!   thread first, so one large document does not stall every other request.
//!
//! Keys say everything a value depends on besides the proxy (the table's owner): the
//! upstream location or representation and the digest of the upstream bytes.
//!
//! [`Derived::stats`] reports a proxy's tables by name (values computed, entries kept),
//! through the service that owns them; nothing here is process-global.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use crate::PackageError;

/// One derived table of one proxy, as [`Packages::derived_stats`](crate::Packages::derived_stats)
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// What the table holds (`helm-index`, `pypi-root`, `yum-last-good`, …).
    pub name: &'static str,
    /// Values computed (parsed, rewritten, rendered) since the proxy was built.
    pub computed: u64,
    /// Entries held now.
    pub kept: usize,
    /// The most entries it ever holds.
    pub capacity: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (every update is one assignment).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One proxy's derived tables.
#[derive(Default)]
pub(crate) struct Derived {
    tables: Mutex<Vec<Entry>>,
}

/// A table, once as itself (to hand out) and once as something that reports its size.
struct Entry {
    name: &'static str,
    kind: TypeId,
    table: Arc<dyn Any + Send + Sync>,
    report: Arc<dyn Report>,
}

trait Report: Send + Sync {
    fn report(&self) -> TableStats;
}

impl std::fmt::Debug for Derived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

impl Derived {
    /// Each table by name (values computed, entries kept): the numbers that show a burst
    /// of requests caused one parse and a table stayed bounded.
    pub(crate) fn stats(&self) -> Vec<TableStats> {
        let tables = lock(&self.tables);
        let mut out: Vec<TableStats> = tables.iter().map(|t| t.report.report()).collect();
        out.sort_by_key(|t| t.name);
        out
    }

    /// The table `name` holding `V` by `K`, made on first use with `capacity` entries whose
    /// values expire `ttl` after they were computed (`None`: never).
    pub(crate) fn table<K, V>(
        &self,
        name: &'static str,
        capacity: usize,
        ttl: Option<Duration>,
    ) -> Arc<Table<K, V>>
    where
        K: Eq + Hash + Clone + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let kind = TypeId::of::<Table<K, V>>();
        let mut tables = lock(&self.tables);
        if let Some(table) = tables
            .iter()
            .find(|t| t.name == name && t.kind == kind)
            .and_then(|t| t.table.clone().downcast::<Table<K, V>>().ok())
        {
            return table;
        }
        let table = Arc::new(Table::new(name, capacity, ttl));
        tables.push(Entry {
            name,
            kind,
            table: table.clone(),
            report: table.clone(),
        });
        table
    }
}

/// A bounded, single-flight map from a key to a derived value.
pub(crate) struct Table<K, V> {
    name: &'static str,
    capacity: usize,
    ttl: Option<Duration>,
    computed: AtomicU64,
    slots: Mutex<Slots<K, V>>,
}

struct Slots<K, V> {
    /// Advances on every use; the slot with the smallest `used` goes first.
    clock: u64,
    map: HashMap<K, Slot<V>>,
}

struct Slot<V> {
    /// Empty while the first request computes it (the others wait on the cell).
    cell: Arc<OnceCell<Arc<V>>>,
    used: u64,
    made: Instant,
}

impl<K, V> Report for Table<K, V>
where
    K: Send + Sync,
    V: Send + Sync,
{
    fn report(&self) -> TableStats {
        TableStats {
            name: self.name,
            computed: self.computed.load(Ordering::Relaxed),
            kept: lock(&self.slots).map.len(),
            capacity: self.capacity,
        }
    }
}

impl<K, V> Table<K, V>
where
    K: Eq + Hash + Clone,
{
    fn new(name: &'static str, capacity: usize, ttl: Option<Duration>) -> Self {
        Self {
            name,
            capacity: capacity.max(1),
            ttl,
            computed: AtomicU64::new(0),
            slots: Mutex::new(Slots {
                clock: 0,
                map: HashMap::new(),
            }),
        }
    }

    fn expired(&self, slot: &Slot<V>) -> bool {
        self.ttl.is_some_and(|ttl| slot.made.elapsed() >= ttl)
    }

    /// The value of `key` when it is computed (and not expired); counts as a use.
    pub(crate) fn get(&self, key: &K) -> Option<Arc<V>> {
        let mut slots = lock(&self.slots);
        let slots = &mut *slots;
        let slot = slots.map.get_mut(key)?;
        if self.expired(slot) {
            slots.map.remove(key);
            return None;
        }
        slots.clock += 1;
        slot.used = slots.clock;
        slot.cell.get().cloned()
    }

    /// Keeps `value`, computed elsewhere (by the check that let its document into the
    /// cache), as the value of `key`.
    pub(crate) fn fill(&self, key: K, value: V) -> Arc<V> {
        self.computed.fetch_add(1, Ordering::Relaxed);
        let value = Arc::new(value);
        let cell = Arc::new(OnceCell::new_with(Some(value.clone())));
        self.insert(key, cell);
        value
    }

    /// Forgets `key`.
    pub(crate) fn remove(&self, key: &K) {
        lock(&self.slots).map.remove(key);
    }

    /// The value of `key`, computed by `compute` when it is not kept: once, however many
    /// requests ask at the same time (they wait for the first one's result). A failure is
    /// not kept; the next request computes again.
    pub(crate) async fn get_or_compute<E, F, Fut>(&self, key: K, compute: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = {
            let mut slots = lock(&self.slots);
            slots.clock += 1;
            let now = slots.clock;
            let kept = slots
                .map
                .get_mut(&key)
                .filter(|slot| !self.expired(slot))
                .map(|slot| {
                    slot.used = now;
                    slot.cell.clone()
                });
            kept.unwrap_or_else(|| {
                let cell = Arc::new(OnceCell::new());
                self.insert_locked(&mut slots, key, cell.clone());
                cell
            })
        };
        cell.get_or_try_init(|| async {
            self.computed.fetch_add(1, Ordering::Relaxed);
            compute().await.map(Arc::new)
        })
        .await
        .cloned()
    }

    fn insert(&self, key: K, cell: Arc<OnceCell<Arc<V>>>) {
        self.insert_locked(&mut lock(&self.slots), key, cell);
    }

    fn insert_locked(&self, slots: &mut Slots<K, V>, key: K, cell: Arc<OnceCell<Arc<V>>>) {
        slots.clock += 1;
        let used = slots.clock;
        slots.map.insert(
            key,
            Slot {
                cell,
                used,
                made: Instant::now(),
            },
        );
        // A few hundred entries at most: a scan per insertion costs less than keeping an
        // ordered index. An entry still being computed can go too; its waiters hold the cell.
        while slots.map.len() > self.capacity {
            let Some(oldest) = slots
                .map
                .iter()
                .min_by_key(|(_, slot)| slot.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            slots.map.remove(&oldest);
        }
    }
}

/// Runs CPU-heavy `work` (parsing, rewriting, hashing a document) on tokio's blocking
/// pool, so the async worker threads keep serving other requests meanwhile.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, PackageError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PackageError::Internal(format!("parsing task failed: {e}")))
}

/// Runs CPU-heavy `work` that borrows its input (a check [`Origin`](crate::Origin) runs on
/// a body before caching it) without stalling other requests: on a multi-threaded runtime
/// (`airlock serve`) the worker hands its queued tasks to another thread first; on a
/// current-thread runtime (tests) that is not possible and `work` simply runs.
pub(crate) fn in_place<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_requests_compute_once() {
        let derived = Derived::default();
        let table = derived.table::<u32, String>("t", 4, None);
        let calls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let table = table.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                table
                    .get_or_compute(1, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Long enough for every other task to arrive and wait.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, String>("one".to_owned())
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(*task.await.unwrap(), "one");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = derived.stats();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].name, stats[0].computed, stats[0].kept),
            ("t", 1, 1)
        );
    }

    #[tokio::test]
    async fn failures_are_not_kept() {
        let table: Table<u32, u32> = Table::new("t", 2, None);
        let failed: Result<_, &str> = table.get_or_compute(1, || async { Err("no") }).await;
        assert!(failed.is_err());
        assert_eq!(table.get(&1), None);
        let value = table.get_or_compute(1, || async { Ok::<_, ()>(7) }).await;
        assert_eq!(value.map(|v| *v), Ok(7));
    }

    #[test]
    fn least_recently_used_goes_first_and_the_table_stays_bounded() {
        let table: Table<u32, u32> = Table::new("t", 3, None);
        for key in 0..3 {
            table.fill(key, key);
        }
        assert_eq!(table.get(&0).as_deref(), Some(&0));
        table.fill(3, 3);
        assert_eq!(table.get(&1), None, "least recently used");
        assert!(table.get(&0).is_some() && table.get(&2).is_some());
        for key in 10..10_000 {
            table.fill(key, key);
        }
        assert_eq!(table.report().kept, 3);
        assert_eq!(table.report().computed, 4 + 9_990);
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let table: Table<u32, u32> = Table::new("t", 3, Some(Duration::from_millis(30)));
        table.fill(1, 1);
        assert!(table.get(&1).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(table.get(&1), None);
        assert_eq!(table.report().kept, 0);
    }

    #[test]
    fn tables_are_per_owner_name_and_type() {
        let a = Derived::default();
        let b = Derived::default();
        a.table::<u32, u32>("x", 2, None).fill(1, 1);
        assert!(a.table::<u32, u32>("x", 2, None).get(&1).is_some());
        assert!(b.table::<u32, u32>("x", 2, None).get(&1).is_none());
        assert!(a.table::<u32, String>("x", 2, None).get(&1).is_none());
        assert_eq!(a.stats().len(), 2, "one per name and type");
        assert!(b.stats().iter().all(|t| t.kept == 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_place_runs_on_a_multi_threaded_runtime() {
        assert_eq!(in_place(|| 2 + 2), 4);
        assert_eq!(blocking(|| 3).await.unwrap(), 3);
    }
}
