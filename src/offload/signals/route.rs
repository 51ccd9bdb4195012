//! Signal targets (uWSGI's `receiver` strings) and where the master sends a signal for each.

/// A signal's target, as `uwsgi.register_signal(num, target, handler)` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `""`, `"worker"`, `"worker0"`: the first worker that takes it (one shared channel).
    AnyWorker,
    /// `"workers"`: every worker.
    Workers,
    /// `"active-workers"`: every worker that is running now.
    ActiveWorkers,
    /// `"workerN"`.
    Worker(usize),
    /// `"spooler"`: the first spooler process that takes it.
    Spooler,
    /// `"spoolers"`: every spooler process (headrace's addition).
    Spoolers,
    /// `"mules"`: every mule.
    Mules,
    /// `"mule"`, `"mule0"`: the first mule that takes it.
    AnyMule,
    /// `"muleN"`.
    Mule(usize),
    /// `"farm_NAME"`: the first mule of the farm that takes it.
    FarmNamed(String),
    /// `"farmN"`: farm N (1-based, in `--farm` order).
    Farm(usize),
    /// `"subscribed"`: accepted and ignored, as uWSGI does.
    Subscribed,
}

/// Parse a target (`Err` names it, for uWSGI's "UNSUPPORTED SIGNAL TARGET" line).
pub fn parse(s: &str) -> Result<Target, String> {
    let num = |rest: &str| rest.parse::<usize>().ok();
    Ok(match s {
        "" | "worker" | "worker0" => Target::AnyWorker,
        "workers" => Target::Workers,
        "active-workers" => Target::ActiveWorkers,
        "spooler" => Target::Spooler,
        "spoolers" => Target::Spoolers,
        "mules" => Target::Mules,
        "mule" | "mule0" => Target::AnyMule,
        "subscribed" => Target::Subscribed,
        _ => {
            if let Some(name) = s.strip_prefix("farm_") {
                Target::FarmNamed(name.to_owned())
            } else if let Some(n) = s.strip_prefix("worker").and_then(num) {
                Target::Worker(n)
            } else if let Some(n) = s.strip_prefix("mule").and_then(num) {
                Target::Mule(n)
            } else if let Some(n) = s.strip_prefix("farm").and_then(num) {
                Target::Farm(n)
            } else {
                return Err(s.to_owned());
            }
        }
    })
}

/// One channel the master writes a signal to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// Shared by every worker: the first to read it runs the handler.
    WorkerPool,
    /// Worker N's own.
    Worker(usize),
    /// Shared by every mule.
    MulePool,
    /// Mule N's own.
    Mule(usize),
    /// Farm N's (0-based), shared by its mules.
    Farm(usize),
    /// Shared by every spooler process.
    SpoolerPool,
    /// Spooler process N's own (0-based, in start order).
    Spooler(usize),
}

/// How many of each the server runs.
pub struct Counts<'a> {
    /// Workers (`--processes`).
    pub workers: usize,
    /// Mules.
    pub mules: usize,
    /// Farm names, in `--farm` order.
    pub farms: &'a [String],
    /// Spooler processes.
    pub spoolers: usize,
}

/// Where a signal for `target` goes. `active(id)`: worker `id` runs now. `registered`: the
/// worker ids that registered the signal themselves, when the master did not (after fork):
/// for the default target, a signal only some workers can handle goes to the first of them
/// (`rr` picks among them in turn) rather than to whichever worker reads the shared channel
/// first. `Err` is the line to log.
pub fn destinations(
    target: &Target,
    n: &Counts<'_>,
    active: &dyn Fn(usize) -> bool,
    registered: Option<&[usize]>,
    rr: usize,
) -> Result<Vec<Dest>, String> {
    let invalid = |what: String| Err(format!("invalid signal target: {what}"));
    Ok(match target {
        Target::AnyWorker => match registered {
            Some(ids) if !ids.is_empty() && ids.len() < n.workers => {
                vec![Dest::Worker(ids[rr % ids.len()])]
            }
            _ => vec![Dest::WorkerPool],
        },
        Target::Workers => (1..=n.workers).map(Dest::Worker).collect(),
        Target::ActiveWorkers => (1..=n.workers)
            .filter(|&i| active(i))
            .map(Dest::Worker)
            .collect(),
        Target::Worker(i) if (1..=n.workers).contains(i) => vec![Dest::Worker(*i)],
        Target::Worker(i) => return invalid(format!("worker{i}")),
        Target::Spooler | Target::Spoolers if n.spoolers == 0 => {
            return Err("there is no spooler (--spooler) to deliver it to".to_owned())
        }
        Target::Spooler => vec![Dest::SpoolerPool],
        Target::Spoolers => (0..n.spoolers).map(Dest::Spooler).collect(),
        Target::Mules | Target::AnyMule if n.mules == 0 => {
            return Err("there is no mule (--mules) to deliver it to".to_owned())
        }
        Target::Mules => (1..=n.mules).map(Dest::Mule).collect(),
        Target::AnyMule => vec![Dest::MulePool],
        Target::Mule(i) if (1..=n.mules).contains(i) => vec![Dest::Mule(*i)],
        Target::Mule(i) => return invalid(format!("mule{i}")),
        Target::FarmNamed(name) => match n.farms.iter().position(|f| f == name) {
            Some(i) => vec![Dest::Farm(i)],
            None => return Err(format!("unknown farm: {name}")),
        },
        Target::Farm(i) if (1..=n.farms.len()).contains(i) => vec![Dest::Farm(i - 1)],
        Target::Farm(i) => return invalid(format!("farm{i}")),
        Target::Subscribed => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_uwsgi_names_them() {
        for (s, t) in [
            ("", Target::AnyWorker),
            ("worker", Target::AnyWorker),
            ("worker0", Target::AnyWorker),
            ("workers", Target::Workers),
            ("active-workers", Target::ActiveWorkers),
            ("worker3", Target::Worker(3)),
            ("spooler", Target::Spooler),
            ("spoolers", Target::Spoolers),
            ("mules", Target::Mules),
            ("mule", Target::AnyMule),
            ("mule0", Target::AnyMule),
            ("mule2", Target::Mule(2)),
            ("farm_io", Target::FarmNamed("io".to_owned())),
            ("farm1", Target::Farm(1)),
            ("subscribed", Target::Subscribed),
        ] {
            assert_eq!(parse(s), Ok(t), "{s:?}");
        }
        for bad in ["workerx", "muley", "everyone", "farm", "Workers"] {
            assert_eq!(parse(bad), Err(bad.to_owned()));
        }
    }

    #[test]
    fn destinations_per_target() {
        let farms = ["io".to_owned(), "cpu".to_owned()];
        let n = Counts {
            workers: 3,
            mules: 2,
            farms: &farms,
            spoolers: 2,
        };
        let active = |i: usize| i != 2;
        let d = |t: Target| destinations(&t, &n, &active, None, 0);
        assert_eq!(d(Target::AnyWorker), Ok(vec![Dest::WorkerPool]));
        assert_eq!(
            d(Target::Workers),
            Ok(vec![Dest::Worker(1), Dest::Worker(2), Dest::Worker(3)])
        );
        assert_eq!(
            d(Target::ActiveWorkers),
            Ok(vec![Dest::Worker(1), Dest::Worker(3)])
        );
        assert_eq!(d(Target::Worker(2)), Ok(vec![Dest::Worker(2)]));
        assert!(d(Target::Worker(4)).is_err());
        assert_eq!(d(Target::Spooler), Ok(vec![Dest::SpoolerPool]));
        assert_eq!(
            d(Target::Spoolers),
            Ok(vec![Dest::Spooler(0), Dest::Spooler(1)])
        );
        assert_eq!(d(Target::Mules), Ok(vec![Dest::Mule(1), Dest::Mule(2)]));
        assert_eq!(d(Target::AnyMule), Ok(vec![Dest::MulePool]));
        assert_eq!(d(Target::Mule(2)), Ok(vec![Dest::Mule(2)]));
        assert!(d(Target::Mule(3)).is_err());
        assert_eq!(
            d(Target::FarmNamed("cpu".to_owned())),
            Ok(vec![Dest::Farm(1)])
        );
        assert_eq!(
            d(Target::FarmNamed("gpu".to_owned())),
            Err("unknown farm: gpu".to_owned())
        );
        assert_eq!(d(Target::Farm(1)), Ok(vec![Dest::Farm(0)]));
        assert!(d(Target::Farm(0)).is_err());
        assert!(d(Target::Farm(3)).is_err());
        assert_eq!(d(Target::Subscribed), Ok(vec![]));
        let none = Counts {
            workers: 1,
            mules: 0,
            farms: &[],
            spoolers: 0,
        };
        assert!(destinations(&Target::Spooler, &none, &active, None, 0).is_err());
        assert!(destinations(&Target::Mules, &none, &active, None, 0).is_err());
    }

    #[test]
    fn a_signal_only_some_workers_registered_goes_to_them() {
        let n = Counts {
            workers: 3,
            mules: 0,
            farms: &[],
            spoolers: 0,
        };
        let all = |_| true;
        let d = |ids: &[usize], rr| destinations(&Target::AnyWorker, &n, &all, Some(ids), rr);
        assert_eq!(d(&[2], 0), Ok(vec![Dest::Worker(2)]));
        assert_eq!(d(&[1, 3], 1), Ok(vec![Dest::Worker(3)]));
        assert_eq!(d(&[1, 2, 3], 1), Ok(vec![Dest::WorkerPool]));
        assert_eq!(d(&[], 0), Ok(vec![Dest::WorkerPool]));
    }
}
