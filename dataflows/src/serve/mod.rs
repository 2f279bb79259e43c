//! `tidings serve`: a long-running node that supervises jobs. Each job is a child process
//! `tidings run JOB.toml` of the same binary, in a process group of its own, so a crashed job
//! cannot take the service down (and a Ctrl-C on the service's terminal reaches only the
//! service, which then stops its jobs itself).
//!
//! - A job is known by its job file's `name`; the file is checked as `tidings run` loads it
//!   ([`Job::load`]) before anything starts.
//! - A job's phase is [`Phase`]: `starting` until its child has lived [`RUNNING_AFTER`],
//!   then `running`; a child that exits non-zero (or by a signal) without a stop request is
//!   `restarting` and started again after a backoff (1 s, doubling to 60 s; back to 1 s when
//!   the child had run 60 s), counted in `restarts`; a child that exits 0 on its own (a file
//!   job that read all its input) is `stopped`; a child that cannot be spawned is `failed`
//!   (and retried with the same backoff).
//! - A stop sends SIGTERM (the job drains to a cut, writes its final checkpoint, commits its
//!   offsets and exits) and waits at most [`STOP_BOUND`], then SIGKILL.
//! - The service's own state — each job's name, path, desired state and restarts — is
//!   `STATE_DIR/serve.json`, written aside and renamed (durable across kill -9); on start the
//!   service resumes every job whose desired state is running (the job resumes from its
//!   checkpoint, as `tidings run` does). Child output is appended to `STATE_DIR/logs/NAME.log`.
//!
//! [`api`] is the REST API over a [`Supervisor`]; [`client`] its other end (the CLI).

pub mod api;
pub mod client;
#[cfg(feature = "sql")]
pub mod console;
pub mod metrics;
pub mod peers;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::job::Job;
use peers::Peers;
use tidings_model::time::wall_ms;

/// A child alive this long is `running` (before: `starting`).
pub const RUNNING_AFTER: Duration = Duration::from_secs(1);
/// The first restart delay; it doubles after each crash.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A child that ran this long before crashing is restarted after [`FIRST_BACKOFF`] again.
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// How long a stop waits for the child: its drain bound (`tidings run`'s default
/// `--drain-timeout`) and the halt's grace; then the child is killed.
pub const STOP_BOUND: Duration = Duration::from_secs(crate::run::DRAIN_TIMEOUT.as_secs() + 15);
/// How long a cluster's process that stopped at another node's request waits before it starts
/// again to rejoin (a stop of the job asked on another node reaches this one well before).
pub const REJOIN_AFTER: Duration = Duration::from_secs(5);
/// How often the supervisor looks at its children.
pub const TICK: Duration = Duration::from_millis(100);

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Its child was started less than [`RUNNING_AFTER`] ago.
    Starting,
    /// Its child is running.
    Running,
    /// Its child crashed; it starts again after the backoff.
    Restarting,
    /// Its child could not be spawned; retried after the backoff.
    Failed,
    /// Not running: stopped on request, or its input ended.
    Stopped,
}

/// What the service wants of a job (kept in `serve.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Keep it running.
    Running,
    /// Leave it stopped.
    Stopped,
}

struct Entry {
    path: PathBuf,
    desired: Desired,
    phase: Phase,
    child: Option<Child>,
    /// When a stop asked of its child gives up waiting and kills it ([`STOP_BOUND`] after the
    /// stop): each stop's own, so one stop's deadline never kills a job stopped after it.
    kill_at: Option<Instant>,
    spawned: Option<Instant>,
    started_at: Option<String>,
    restarts: u64,
    last_exit: Option<String>,
    backoff: Duration,
    next_start: Instant,
    job: Option<Arc<Job>>,
    /// The job's cluster hostfile lines (`serve --peers`); this node runs process `peers.me`.
    cluster: Option<Vec<String>>,
}

impl Entry {
    fn new(path: PathBuf, desired: Desired, restarts: u64, job: Option<Arc<Job>>) -> Entry {
        Entry {
            path,
            desired,
            phase: match desired {
                Desired::Running => Phase::Starting,
                Desired::Stopped => Phase::Stopped,
            },
            child: None,
            kill_at: None,
            spawned: None,
            started_at: None,
            restarts,
            last_exit: None,
            backoff: FIRST_BACKOFF,
            next_start: Instant::now(),
            job,
            cluster: None,
        }
    }
}

/// `serve.json`.
#[derive(Serialize, Deserialize, Default)]
struct Saved {
    jobs: Vec<SavedJob>,
}

#[derive(Serialize, Deserialize)]
struct SavedJob {
    name: String,
    path: PathBuf,
    desired: Desired,
    #[serde(default)]
    restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster: Option<Vec<String>>,
}

/// Why a request about a job was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The job file cannot be used: its problems, one line each (as `tidings run` prints them).
    BadJob(Vec<String>),
    /// A bad request (e.g. a relative path).
    Bad(String),
    /// No job of that name.
    NotFound(String),
    /// A job of that name is already running.
    Conflict(String),
    /// The service could not do it (its state file, a signal).
    Failed(String),
}

/// The supervised jobs.
pub struct Supervisor {
    dir: PathBuf,
    exe: PathBuf,
    jobs: Mutex<BTreeMap<String, Entry>>,
    changed: Condvar,
    stopping: AtomicBool,
    /// `serve.lock` in the state directory, held while the service runs.
    _lock: crate::lock::RunLock,
    /// The other service nodes a submitted job runs on as one cluster (`--peers`).
    peers: std::sync::OnceLock<Peers>,
    /// Each job's send API (`POST /jobs/{name}/send`).
    gateways: Mutex<Made<Gateway>>,
    /// Each job's tracking tables as the console opened them (`console::tables`).
    #[cfg(feature = "sql")]
    tables: Mutex<Made<tidings_sql::Tracking>>,
}

/// What the service makes for a job (its send API, its console tables), by job name, with the
/// loaded job it was made for: a job loaded again (submitted anew) gets another.
type Made<T> = BTreeMap<String, (Arc<Job>, Arc<T>)>;

/// What `made` keeps for `job`, loaded as job `name`.
fn made_for<T>(made: &Made<T>, name: &str, job: &Arc<Job>) -> Option<Arc<T>> {
    made.get(name)
        .filter(|(made_for, _)| Arc::ptr_eq(made_for, job))
        .map(|(_, t)| t.clone())
}

impl Supervisor {
    /// Opens the service's state directory: reads `serve.json` (if there is one) and marks
    /// every job whose desired state is running to be started by the next [`Supervisor::tick`].
    /// `exe` is the `tidings` binary the children run.
    pub fn open(dir: &Path, exe: PathBuf) -> anyhow::Result<Arc<Supervisor>> {
        std::fs::create_dir_all(dir.join("logs"))
            .map_err(|e| anyhow::anyhow!("--state-dir {}: {e}", dir.display()))?;
        // Two services on one state directory would each resume every job (one of each pair
        // failing on the job's lock) and overwrite each other's serve.json.
        let lock = crate::lock::RunLock::acquire_named(dir, "serve.lock").map_err(|e| {
            // Held (`acquire_named` names its holder); any other failure says its own.
            match e.to_string().contains("holds the lock") {
                true => anyhow::anyhow!(
                    "--state-dir {}: another `tidings serve` uses it (it holds serve.lock); stop that one, or give this one a --state-dir of its own",
                    dir.display()
                ),
                false => e,
            }
        })?;
        let file = dir.join("serve.json");
        let saved: Saved = crate::read_json_or_default(
            &file,
            " (not the service's state); move it away to start empty",
        )?;
        let mut jobs = BTreeMap::new();
        for mut s in saved.jobs {
            let job = Job::load(&s.path).ok().map(Arc::new);
            if let Some(Err(why)) = job.as_ref().map(|j| renamed(&s.name, &s.path, j)) {
                tracing::warn!("job `{}` not resumed: {why}", s.name);
                s.desired = Desired::Stopped;
            }
            if s.desired == Desired::Running {
                tracing::info!("resuming job `{}` ({})", s.name, s.path.display());
            }
            let mut entry = Entry::new(s.path, s.desired, s.restarts, job);
            entry.cluster = s.cluster;
            jobs.insert(s.name, entry);
        }
        Ok(Arc::new(Supervisor {
            dir: dir.to_path_buf(),
            exe,
            jobs: Mutex::new(jobs),
            changed: Condvar::new(),
            stopping: AtomicBool::new(false),
            _lock: lock,
            peers: std::sync::OnceLock::new(),
            gateways: Mutex::new(BTreeMap::new()),
            #[cfg(feature = "sql")]
            tables: Default::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock leaves the map as it was between two steps: usable.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submits the job file at `path` (absolute): checked as `tidings run` loads it, then
    /// started. A job of the same name that is stopped is replaced. A file under `uploads/` is
    /// refused: an upload's files are checked as one job ([`Supervisor::submit_upload`]), and
    /// another file sent with it, submitted by its path, would reach past them.
    pub fn submit(&self, path: &Path) -> Result<Value, Refusal> {
        let uploads = self.dir.join("uploads").canonicalize().ok();
        if let (Some(uploads), Ok(file)) = (uploads, path.canonicalize())
            && file.starts_with(&uploads)
        {
            return Err(Refusal::Bad(format!(
                "{}: a file of an upload is submitted by uploading it (tidings submit --upload)",
                path.display()
            )));
        }
        let Some(peers) = self.peers.get() else {
            return self.submit_with(path, None);
        };
        // With peers: the job runs as one cluster over every node.
        let hosts = peers.new_cluster().map_err(Refusal::Failed)?;
        let answer = self.submit_with(path, Some(hosts.clone()))?;
        let body = json!({"path": path, "cluster": hosts});
        if let Err(why) = peers.forward(reqwest::Method::POST, "/jobs", Some(&body)) {
            let name = answer["name"].as_str().unwrap_or_default().to_string();
            let _ = self.delete(&name, true);
            let _ = peers.forward(
                reqwest::Method::DELETE,
                &format!("{}?forwarded=true", client::job_path(&name)),
                None,
            );
            return Err(Refusal::Failed(format!(
                "the job's cluster could not start on every node: {why}"
            )));
        }
        Ok(answer)
    }

    /// This node's peers, once set (`serve --peers`).
    pub fn set_peers(&self, peers: Peers) {
        let _ = self.peers.set(peers);
    }

    /// Submits `path` with the cluster hostfile another node chose (`serve --peers`): this
    /// node runs its process of the job.
    pub fn submit_forwarded(&self, path: &Path, cluster: Vec<String>) -> Result<Value, Refusal> {
        match self.peers.get() {
            Some(p) if p.apis.len() == cluster.len() => self.submit_with(path, Some(cluster)),
            Some(p) => Err(Refusal::Bad(format!(
                "a cluster of {} processes sent to a node of {} peers",
                cluster.len(),
                p.apis.len()
            ))),
            None => Err(Refusal::Bad(
                "this node has no --peers: it cannot run a process of a cluster".into(),
            )),
        }
    }

    fn submit_with(&self, path: &Path, cluster: Option<Vec<String>>) -> Result<Value, Refusal> {
        if !path.is_absolute() {
            return Err(Refusal::Bad(format!(
                "{}: give the job file's absolute path on this node",
                path.display()
            )));
        }
        let job = Job::load(path).map_err(|e| Refusal::BadJob(e.problems))?;
        let name = job.file.name.clone();
        let mut jobs = self.lock();
        if let Some(e) = jobs.get(&name)
            && (e.desired == Desired::Running || e.child.is_some())
        {
            return Err(Refusal::Conflict(format!(
                "a job named `{name}` is already running ({}); stop it first",
                e.path.display()
            )));
        }
        let restarts = jobs.get(&name).map_or(0, |e| e.restarts);
        let mut entry = Entry::new(
            path.to_path_buf(),
            Desired::Running,
            restarts,
            Some(Arc::new(job)),
        );
        entry.cluster = cluster;
        let before = jobs.insert(name.clone(), entry);
        // Not saved: not submitted (the ticker would start what the caller was refused).
        self.persist_or_undo(&mut jobs, |jobs| match before {
            Some(e) => drop(jobs.insert(name.clone(), e)),
            None => drop(jobs.remove(&name)),
        })?;
        tracing::info!("job `{name}` submitted ({})", path.display());
        let answer = describe(&name, &jobs[&name]);
        drop(jobs);
        self.changed.notify_all();
        Ok(answer)
    }

    /// Submits a job sent in the request: `job` is the job file's text, `files` the files it
    /// names (templates, a requests file), by path relative to it. They are checked in a scratch
    /// directory first (a bad job file is refused as `tidings run` refuses it, nothing kept),
    /// then written to `uploads/NAME/` (files of an earlier upload of the same name are
    /// overwritten, its state and tracking directories kept) and the job submitted from there.
    pub fn submit_upload(
        &self,
        job: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<Value, Refusal> {
        if self.peers.get().is_some() {
            return Err(Refusal::Bad(
                "this node runs jobs over --peers: submit the path of a job file every node reads (a shared file system); an upload stays on one node".into(),
            ));
        }
        for name in files.keys() {
            let p = Path::new(name);
            let plain = p
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if name.is_empty() || !plain || name == "job.toml" {
                return Err(Refusal::Bad(format!(
                    "files.{name}: give a relative path without `..` (and not job.toml)"
                )));
            }
        }
        // One upload at a time: two would share the scratch directory (made in the same
        // millisecond), and two of one name would both pass the running check and write.
        static UPLOADING: Mutex<()> = Mutex::new(());
        let _one = UPLOADING.lock().unwrap_or_else(|p| p.into_inner());
        let failed = |e: std::io::Error| Refusal::Failed(e.to_string());
        let uploads = self.dir.join("uploads");
        let scratch = uploads.join(format!(".incoming-{}-{}", std::process::id(), wall_ms()));
        let write_all = |dir: &Path| -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join("job.toml"), job)?;
            for (name, text) in files {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(path, text)?;
            }
            Ok(())
        };
        let checked = write_all(&scratch).map_err(failed).and_then(|()| {
            // Problems name the files as sent (job.toml, templates.toml), not the scratch.
            let shown = format!("{}/", scratch.display());
            Job::load(&scratch.join("job.toml")).map_err(|e| {
                Refusal::BadJob(e.problems.iter().map(|p| p.replace(&shown, "")).collect())
            })
        });
        let _ = std::fs::remove_dir_all(&scratch);
        let name = outside_upload(&checked?.file)?;
        let earlier = {
            let jobs = self.lock();
            if let Some(e) = jobs.get(&name)
                && (e.desired == Desired::Running || e.child.is_some())
            {
                return Err(Refusal::Conflict(format!(
                    "a job named `{name}` is already running ({}); stop it first",
                    e.path.display()
                )));
            }
            // An upload of this name made before: its directory, and with it its state
            // (an upload before names were hashed lives where its name was written plainly).
            jobs.get(&name)
                .and_then(|e| e.path.parent().map(Path::to_path_buf))
                .filter(|dir| dir.parent() == uploads.canonicalize().ok().as_deref())
        };
        let home = earlier.unwrap_or_else(|| uploads.join(file_name(&name)));
        write_all(&home).map_err(failed)?;
        let path = home.canonicalize().map_err(failed)?.join("job.toml");
        self.submit_with(&path, None)
    }

    /// Every job, by name.
    pub fn list(&self) -> Vec<Value> {
        let jobs = self.lock();
        jobs.iter().map(|(n, e)| describe(n, e)).collect()
    }

    /// One job, and the loaded job (for its admin address) when it is running.
    pub fn get(&self, name: &str) -> Result<(Value, Option<Arc<Job>>), Refusal> {
        let jobs = self.lock();
        let e = jobs.get(name).ok_or_else(|| not_found(name))?;
        let live = matches!(e.phase, Phase::Running)
            .then(|| e.job.clone())
            .flatten();
        Ok((describe(name, e), live))
    }

    /// The send APIs' metrics texts, one per job whose API has been used.
    pub fn gateway_metrics(&self) -> Vec<String> {
        let gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        gateways.values().map(|(_, g)| g.metrics_text()).collect()
    }

    /// Job `name` as loaded (from its file when the service has not loaded it yet, and kept:
    /// what is made for a loaded job, its console tables, is kept with it), running or not.
    pub fn job(&self, name: &str) -> Result<Arc<Job>, Refusal> {
        let mut jobs = self.lock();
        load_into(jobs.get_mut(name).ok_or_else(|| not_found(name))?)
    }

    /// The send API of job `name`, or (`None`) of the only job with a Kafka source. Requests
    /// are produced to the job's topic whether the job runs or not (it reads them when it
    /// does).
    pub fn gateway(&self, name: Option<&str>) -> Result<Arc<Gateway>, Refusal> {
        // Held until the gateway is kept: a job deleted meanwhile would get it back.
        let mut jobs = self.lock();
        let (name, job) = {
            let name = match name {
                Some(n) => n.to_string(),
                None => {
                    // Jobs the service has not loaded yet are loaded now (and kept), so the
                    // choice sees every job's source.
                    let mut kafka = Vec::new();
                    for (n, e) in jobs.iter_mut() {
                        if let Ok(job) = load_into(e)
                            && job.kafka.is_some()
                        {
                            kafka.push(n.clone());
                        }
                    }
                    match kafka.as_slice() {
                        [one] => one.clone(),
                        [] => {
                            return Err(Refusal::NotFound(
                                "no job with a Kafka source runs here: submit one first".into(),
                            ));
                        }
                        many => {
                            return Err(Refusal::Bad(format!(
                                "several jobs run here ({}): post to /jobs/NAME/send",
                                many.join(", ")
                            )));
                        }
                    }
                }
            };
            let e = jobs.get_mut(&name).ok_or_else(|| not_found(&name))?;
            (name, load_into(e)?)
        };
        let mut gateways = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = made_for(&gateways, &name, &job) {
            return Ok(g);
        }
        // A file job has no send API (the caller's mistake); a Kafka job's that cannot be
        // made (its door book unreadable, a client librdkafka refuses) is the service's.
        let refusal = if job.kafka.is_some() {
            Refusal::Failed
        } else {
            Refusal::Bad
        };
        let g = Arc::new(
            Gateway::connect(&job, None).map_err(|e| refusal(format!("job `{name}`: {e:#}")))?,
        );
        gateways.insert(name, (job, g.clone()));
        Ok(g)
    }

    /// Stops a job gracefully and waits for its child (at most [`STOP_BOUND`], then kills it).
    pub fn stop(&self, name: &str, forwarded: bool) -> Result<Value, Refusal> {
        let answer = self.stop_here(name)?;
        self.pass_on(name, forwarded, reqwest::Method::POST, "stop")?;
        Ok(answer)
    }

    /// A cluster job's stop, restart or delete asked here goes to the other nodes too.
    fn pass_on(
        &self,
        name: &str,
        forwarded: bool,
        method: reqwest::Method,
        what: &str,
    ) -> Result<(), Refusal> {
        let Some(peers) = self.peers.get() else {
            return Ok(());
        };
        let clustered = self.lock().get(name).is_none_or(|e| e.cluster.is_some());
        if forwarded || !clustered {
            return Ok(());
        }
        let path = match what {
            "" => format!("{}?forwarded=true", client::job_path(name)),
            w => format!("{}/{w}?forwarded=true", client::job_path(name)),
        };
        peers
            .forward(method, &path, None)
            .map_err(|e| Refusal::Failed(format!("job `{name}` on its other nodes: {e}")))
    }

    fn stop_here(&self, name: &str) -> Result<Value, Refusal> {
        let mut jobs = self.lock();
        let e = jobs.get_mut(name).ok_or_else(|| not_found(name))?;
        let was = (e.desired, e.phase);
        e.desired = Desired::Stopped;
        let pid = e.child.as_ref().map(Child::id);
        if pid.is_none() {
            e.phase = Phase::Stopped;
        }
        // Not saved: not stopped either (the job would resume at the next start).
        self.persist_or_undo(&mut jobs, |jobs| {
            if let Some(e) = jobs.get_mut(name) {
                (e.desired, e.phase) = was;
            }
        })?;
        if let Some(pid) = pid
            && let Some(e) = jobs.get_mut(name)
        {
            tracing::info!("stopping job `{name}` (SIGTERM to pid {pid})");
            terminate(pid);
            e.kill_at.get_or_insert(Instant::now() + STOP_BOUND);
        }
        let jobs = self.wait_gone(jobs, |jobs| {
            jobs.get(name).is_none_or(|e| e.child.is_none())
        });
        jobs.get(name)
            .map(|e| describe(name, e))
            .ok_or_else(|| not_found(name))
    }

    /// Stops a job, then starts it again (it resumes from its checkpoint). The job file is
    /// checked again first.
    pub fn restart(&self, name: &str, forwarded: bool) -> Result<Value, Refusal> {
        let answer = self.restart_here(name)?;
        self.pass_on(name, forwarded, reqwest::Method::POST, "restart")?;
        Ok(answer)
    }

    fn restart_here(&self, name: &str) -> Result<Value, Refusal> {
        let path = {
            let jobs = self.lock();
            jobs.get(name).ok_or_else(|| not_found(name))?.path.clone()
        };
        let job = Job::load(&path).map_err(|e| Refusal::BadJob(e.problems))?;
        renamed(name, &path, &job).map_err(Refusal::Bad)?;
        self.stop_here(name)?;
        let mut jobs = self.lock();
        let e = jobs.get_mut(name).ok_or_else(|| not_found(name))?;
        e.desired = Desired::Running;
        e.phase = Phase::Starting;
        e.backoff = FIRST_BACKOFF;
        e.next_start = Instant::now();
        e.job = Some(Arc::new(job));
        // Not saved: left stopped, as it was saved.
        self.persist_or_undo(&mut jobs, |jobs| {
            if let Some(e) = jobs.get_mut(name) {
                (e.desired, e.phase) = (Desired::Stopped, Phase::Stopped);
            }
        })?;
        let answer = describe(name, &jobs[name]);
        drop(jobs);
        self.changed.notify_all();
        Ok(answer)
    }

    /// Stops a job if it runs, and forgets it.
    pub fn delete(&self, name: &str, forwarded: bool) -> Result<Value, Refusal> {
        let answer = self.stop_here(name)?;
        self.pass_on(name, forwarded, reqwest::Method::DELETE, "")?;
        let mut jobs = self.lock();
        // Submitted again while it stopped: that job is not the one asked to go (removing
        // it would leave its process running, unlisted).
        if jobs
            .get(name)
            .is_some_and(|e| e.desired == Desired::Running || e.child.is_some())
        {
            return Err(Refusal::Conflict(format!(
                "job `{name}` was submitted again while it stopped; delete it again"
            )));
        }
        let removed = jobs.remove(name);
        // Not saved: still listed (the next start would bring it back unlisted otherwise).
        self.persist_or_undo(&mut jobs, |jobs| {
            if let Some(e) = removed {
                jobs.insert(name.to_string(), e);
            }
        })?;
        // What was made for it goes with it: its send API (and the API's metrics), its tables.
        self.gateways
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        #[cfg(feature = "sql")]
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(json!({"deleted": name, "last": answer}))
    }

    /// One look at every job: reaps exited children (restarting crashed ones with backoff)
    /// and starts the jobs that are due.
    pub fn tick(&self) {
        let mut jobs = self.lock();
        let now = Instant::now();
        let stopping = self.stopping.load(Ordering::SeqCst);
        let mut save = false;
        let mut reaped = false;
        for (name, e) in jobs.iter_mut() {
            if let Some(child) = &mut e.child {
                match child.try_wait() {
                    Ok(None) => {
                        if e.phase == Phase::Starting
                            && e.spawned.is_some_and(|s| s.elapsed() >= RUNNING_AFTER)
                        {
                            e.phase = Phase::Running;
                        }
                        continue;
                    }
                    Ok(Some(status)) => {
                        reaped = true;
                        save |= self.exited(name, e, status, stopping);
                    }
                    Err(err) => {
                        tracing::warn!("job `{name}`: cannot wait for its child: {err}");
                        continue;
                    }
                }
            }
            if e.child.is_none()
                && e.desired == Desired::Running
                && !stopping
                && e.next_start <= now
            {
                self.spawn(name, e);
            }
        }
        if save && let Err(Refusal::Failed(why)) = self.persist(&jobs) {
            tracing::error!("{why}");
        }
        drop(jobs);
        if reaped {
            self.changed.notify_all();
        }
    }

    /// Records a child's exit; whether `serve.json` changed.
    fn exited(&self, name: &str, e: &mut Entry, status: ExitStatus, stopping: bool) -> bool {
        let ran = e.spawned.map_or(Duration::ZERO, |s| s.elapsed());
        e.child = None;
        e.kill_at = None;
        e.last_exit = Some(exit_text(status));
        if e.desired == Desired::Stopped || stopping {
            e.phase = Phase::Stopped;
            tracing::info!("job `{name}` stopped ({})", exit_text(status));
            false
        } else if status.success()
            && e.cluster.is_some()
            && e.job.as_ref().is_some_and(|j| j.kafka.is_some())
        {
            // A Kafka job's cluster ends only when a stop is asked of one of its processes:
            // here (not this), of the job on another node (whose forwarded stop is on its way
            // and finds it stopped), or of another node's service (stopped or restarting).
            // Started again after REJOIN_AFTER unless that stop came, so the cluster forms
            // again when the other service is back; marking it stopped left the job stopped
            // here while the other node's resumed process waited for it.
            e.phase = Phase::Restarting;
            e.next_start = Instant::now() + REJOIN_AFTER;
            tracing::info!(
                "job `{name}`: its cluster stopped at another node's request; starting it again in {} s unless it is stopped here too",
                REJOIN_AFTER.as_secs()
            );
            false
        } else if status.success() {
            e.phase = Phase::Stopped;
            e.desired = Desired::Stopped;
            tracing::info!("job `{name}` ended: its input is read");
            true
        } else {
            if ran >= BACKOFF_RESET {
                e.backoff = FIRST_BACKOFF;
            }
            e.phase = Phase::Restarting;
            e.restarts += 1;
            e.next_start = Instant::now() + e.backoff;
            tracing::warn!(
                "job `{name}` crashed ({}) after {:.1} s; restarting in {} s (see {})",
                exit_text(status),
                ran.as_secs_f64(),
                e.backoff.as_secs(),
                self.log_path(name).display()
            );
            e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
            true
        }
    }

    fn spawn(&self, name: &str, e: &mut Entry) {
        let log = self.log_path(name);
        let started = (|| -> std::io::Result<Child> {
            let mut out = OpenOptions::new().create(true).append(true).open(&log)?;
            writeln!(
                out,
                "--- tidings serve: {} run {} ---",
                chrono::Utc::now().to_rfc3339(),
                e.path.display()
            )?;
            let err = out.try_clone()?;
            let mut command = Command::new(&self.exe);
            command.arg("run").arg(&e.path);
            if let (Some(hosts), Some(peers)) = (&e.cluster, self.peers.get()) {
                // Process `me` of the job's cluster; every node runs the job's `workers`
                // (1 when the job file sets none: the processes must agree).
                let file = self
                    .dir
                    .join("cluster")
                    .join(format!("{}.hosts", file_name(name)));
                std::fs::create_dir_all(self.dir.join("cluster"))?;
                std::fs::write(&file, hosts.join("\n") + "\n")?;
                let workers = e.job.as_ref().and_then(|j| j.file.workers).unwrap_or(1);
                command
                    .args(["-w", &workers.to_string(), "-n", &hosts.len().to_string()])
                    .args(["-p", &peers.me.to_string(), "-h"])
                    .arg(&file);
            }
            // The child stops (as on SIGTERM) when this pipe closes: a service killed outright
            // leaves no job running that no service knows of.
            command
                .stdin(Stdio::piped())
                .env(crate::signals::STOP_WITH_STDIN, "1")
                .stdout(out)
                .stderr(err);
            #[cfg(unix)]
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command.spawn()
        })();
        match started {
            Ok(child) => {
                tracing::info!("job `{name}` started: pid {}", child.id());
                e.child = Some(child);
                e.spawned = Some(Instant::now());
                e.started_at = Some(chrono::Utc::now().to_rfc3339());
                e.phase = Phase::Starting;
            }
            Err(err) => {
                tracing::error!("job `{name}`: cannot start `{}`: {err}", self.exe.display());
                e.phase = Phase::Failed;
                e.last_exit = Some(format!("cannot start: {err}"));
                e.next_start = Instant::now() + e.backoff;
                e.backoff = (e.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Stops every job gracefully (their desired state stays, so the next `serve` resumes
    /// them) and waits for them; used when the service itself is stopped.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let mut jobs = self.lock();
        for (name, e) in jobs.iter_mut() {
            if let Some(c) = &e.child {
                tracing::info!("stopping job `{name}` (SIGTERM to pid {})", c.id());
                terminate(c.id());
                e.kill_at.get_or_insert(Instant::now() + STOP_BOUND);
            }
        }
        drop(self.wait_gone(jobs, |jobs| jobs.values().all(|e| e.child.is_none())));
    }

    /// Waits (ticking) until `done`, at most [`STOP_BOUND`]; then kills the children whose
    /// stop is as old (`Entry::kill_at`).
    fn wait_gone<'a>(
        &'a self,
        mut jobs: MutexGuard<'a, BTreeMap<String, Entry>>,
        done: impl Fn(&BTreeMap<String, Entry>) -> bool,
    ) -> MutexGuard<'a, BTreeMap<String, Entry>> {
        let deadline = Instant::now() + STOP_BOUND;
        while !done(&jobs) {
            let now = Instant::now();
            if now >= deadline {
                kill_overdue(&mut jobs, now);
                drop(jobs);
                std::thread::sleep(TICK);
                self.tick();
                return self.lock();
            }
            // The ticker reaps the child and notifies; tick here too in case it is busy.
            jobs = self
                .changed
                .wait_timeout(jobs, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            drop(jobs);
            self.tick();
            jobs = self.lock();
        }
        jobs
    }

    /// [`Supervisor::persist`]; when `serve.json` cannot take the change just made in
    /// memory, `undo` takes it back there too, so the service never runs what it would
    /// forget at its next start, nor forgets what it runs.
    fn persist_or_undo(
        &self,
        jobs: &mut BTreeMap<String, Entry>,
        undo: impl FnOnce(&mut BTreeMap<String, Entry>),
    ) -> Result<(), Refusal> {
        self.persist(jobs).inspect_err(|_| undo(jobs))
    }

    /// Writes `serve.json` aside and renames it over the old one.
    fn persist(&self, jobs: &BTreeMap<String, Entry>) -> Result<(), Refusal> {
        let saved = Saved {
            jobs: jobs
                .iter()
                .map(|(n, e)| SavedJob {
                    name: n.clone(),
                    path: e.path.clone(),
                    desired: e.desired,
                    restarts: e.restarts,
                    cluster: e.cluster.clone(),
                })
                .collect(),
        };
        let file = self.dir.join("serve.json");
        let aside = self.dir.join("serve.json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&aside)?;
            f.write_all(&serde_json::to_vec_pretty(&saved).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&aside, &file)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| Refusal::Failed(format!("{}: {e}", file.display())))
    }

    /// `STATE_DIR/logs/NAME.log`, NAME as [`file_name`] writes it.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("logs")
            .join(format!("{}.log", file_name(name)))
    }
}

/// The entry's job, loaded from its file and kept when the service had not loaded it (so the
/// same loaded job, and the send API made for it, serve every request).
fn load_into(e: &mut Entry) -> Result<Arc<Job>, Refusal> {
    let job = loaded(e)?;
    e.job = Some(job.clone());
    Ok(job)
}

fn loaded(e: &Entry) -> Result<Arc<Job>, Refusal> {
    match &e.job {
        Some(j) => Ok(j.clone()),
        None => Job::load(&e.path)
            .map(Arc::new)
            .map_err(|e| Refusal::BadJob(e.problems)),
    }
}

/// Refuses a job whose file now names another job than the one it was submitted as (the
/// entry would run job `b` under `a`, and a submit of `b` run it twice).
fn renamed(name: &str, path: &Path, job: &Job) -> Result<(), String> {
    if job.file.name == name {
        return Ok(());
    }
    Err(format!(
        "{}: the file now names job `{}`, not `{name}`: delete `{name}` and submit it again",
        path.display(),
        job.file.name
    ))
}

fn not_found(name: &str) -> Refusal {
    Refusal::NotFound(format!("no job named `{name}`; GET /jobs lists them"))
}

fn describe(name: &str, e: &Entry) -> Value {
    json!({
        "name": name,
        "path": e.path,
        "state": e.phase,
        "desired": e.desired,
        "pid": e.child.as_ref().map(Child::id),
        "restarts": e.restarts,
        "last_exit": e.last_exit,
        "started_at": e.started_at,
        "cluster": e.cluster,
    })
}

/// `exit 0`, `exit 101`, `signal 9`.
pub fn exit_text(status: ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return format!("signal {sig}");
    }
    match status.code() {
        Some(c) => format!("exit {c}"),
        None => status.to_string(),
    }
}

/// Asks a child to stop gracefully: SIGTERM, sent by `kill(1)` (the workspace forbids the
/// `unsafe` a direct kill(2) would need). The child is not reaped yet (its entry holds it), so
/// the pid cannot have been reused.
pub fn terminate(pid: u32) {
    match Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::warn!("SIGTERM to pid {pid}: kill {s}"),
        Err(e) => tracing::warn!("SIGTERM to pid {pid}: cannot run kill: {e}"),
    }
}

/// A job's name as a file or directory name of its own (its upload's directory, its log): the
/// name itself when it is letters, digits, `.`, `_` and `-` only (not `.` or `..`); otherwise
/// those characters with `_` for the rest and a hash of the whole name, so two names never
/// share one (`订单通知` and `短信通知` are both `____` before the hash).
pub fn file_name(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.chars().all(plain) && !matches!(name, "" | "." | "..") {
        return name.to_string();
    }
    let safe: String = name
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    format!(
        "{safe}-{:08x}",
        xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as u32
    )
}

/// The name of an uploaded job whose paths stay inside its upload: a relative path without
/// `..` (an object-store prefix too). An upload reaches no other file of the server (its
/// `source.path = "/etc/…"` would be read into dead letters a query shows); a job file
/// submitted by its path on the server may.
fn outside_upload(f: &crate::job::JobFile) -> Result<String, Refusal> {
    // (key, path, whether it may be an object-store prefix)
    let mut paths = vec![
        ("templates".to_string(), Some(&f.templates), false),
        ("tracking.dir".into(), Some(&f.tracking.dir), true),
        ("source.path".into(), f.source.path.as_ref(), false),
        ("state_dir".into(), f.state_dir.as_ref(), true),
        ("local_state_dir".into(), f.local_state_dir.as_ref(), false),
    ];
    for (name, a) in &f.accounts {
        paths.push((format!("accounts.{name}.dir"), a.dir.as_ref(), false));
    }
    for (key, path, store) in paths {
        let Some(path) = path else { continue };
        let remote = store && path.to_str().is_some_and(|p| p.starts_with("s3://"));
        let inside = path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if !remote && !inside {
            return Err(Refusal::Bad(format!(
                "{key} {}: an uploaded job keeps its files inside its upload (a relative path \
                 without ..); submit a job file by its path on the server to reach others",
                path.display()
            )));
        }
    }
    Ok(f.name.clone())
}

/// Kills the children whose stop was asked [`STOP_BOUND`] or more before `now`: each by its
/// own `Entry::kill_at`, so a stop asked later is not killed at an earlier one's deadline.
/// Their names.
fn kill_overdue(jobs: &mut BTreeMap<String, Entry>, now: Instant) -> Vec<String> {
    let mut killed = Vec::new();
    for (name, e) in jobs.iter_mut() {
        if e.kill_at.is_some_and(|at| at <= now)
            && let Some(c) = &mut e.child
        {
            tracing::warn!(
                "job `{name}` did not stop within {} s; killing it",
                STOP_BOUND.as_secs()
            );
            let _ = c.kill();
            killed.push(name.clone());
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each stop kills only its own job at its own deadline: job `a`, whose stop is past its
    /// bound, is killed, while `b`, stopped later, keeps the rest of its own (one stop's
    /// deadline killed every job being stopped, mid-drain). And one service per directory.
    #[cfg(unix)]
    #[test]
    fn a_stop_kills_only_its_own_job_at_its_own_deadline() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A job that does not stop on SIGTERM: it waits for its pipe from the service.
        let exe = dir.path().join("stubborn");
        std::fs::write(&exe, "#!/bin/sh\ntrap '' TERM\nread -r _\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("t.toml"),
            "[[template]]\nid = 1\nname = \"t\"\nchannel = \"sms\"\nmsg_type = \"notice\"\nid_type = \"phone\"\naccount = \"o\"\n[template.content]\ncontent = \"x\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("r.jsonl"), "").unwrap();
        let sup = Supervisor::open(&dir.path().join("serve"), exe.clone()).unwrap();
        let second = Supervisor::open(&dir.path().join("serve"), exe)
            .err()
            .unwrap();
        assert!(
            second
                .to_string()
                .contains("another `tidings serve` uses it"),
            "{second}"
        );
        for name in ["a", "b"] {
            let job = dir.path().join(format!("{name}.toml"));
            std::fs::write(
                &job,
                format!("name = \"{name}\"\ntemplates = \"t.toml\"\n[source]\nkind = \"file\"\npath = \"r.jsonl\"\n[accounts.o]\nchannel = \"sms\"\nprovider = \"outbox\"\ndir = \"out-{name}\"\n"),
            )
            .unwrap();
            sup.submit(&job).unwrap();
        }
        sup.tick();
        let mut jobs = sup.lock();
        let now = Instant::now();
        // `a`'s stop was asked a whole bound ago, `b`'s a second ago.
        jobs.get_mut("a").unwrap().kill_at = Some(now);
        jobs.get_mut("b").unwrap().kill_at = Some(now + STOP_BOUND - Duration::from_secs(1));
        assert_eq!(kill_overdue(&mut jobs, now), ["a"]);
        let mut child = |name: &str| jobs.get_mut(name).unwrap().child.take().unwrap();
        let (mut a, mut b) = (child("a"), child("b"));
        assert!(!a.wait().unwrap().success(), "a was killed at its deadline");
        assert!(
            b.try_wait().unwrap().is_none(),
            "b was killed at a's deadline, before its own"
        );
        b.kill().unwrap();
        b.wait().unwrap();
    }

    #[test]
    fn two_job_names_never_share_a_directory() {
        assert_eq!(file_name("sms-notices_2.v1"), "sms-notices_2.v1");
        let names = [
            "订单通知",
            "短信通知",
            "____",
            "a b",
            "a/b",
            "a_b",
            ".",
            "..",
            "",
        ];
        let files: Vec<String> = names.iter().map(|n| file_name(n)).collect();
        let distinct: std::collections::BTreeSet<&String> = files.iter().collect();
        assert_eq!(distinct.len(), names.len(), "{files:?}");
        for f in &files {
            assert!(!matches!(f.as_str(), "" | "." | ".."), "{files:?}");
            assert!(
                f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
                "{f}"
            );
        }
        assert_eq!(file_name("订单通知"), file_name("订单通知"));
    }
}
