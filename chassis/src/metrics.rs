use axum::{http::header, response::IntoResponse, routing::get, Router};
use prometheus::{
    core::{Collector, Desc},
    process_collector::ProcessCollector,
    proto::{Counter, MetricFamily},
    Encoder, TextEncoder,
};

/// Registers the process's own metrics (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, …) once; a binary calls it at start.
pub fn register_process_metrics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The default registry comes with the crate's own process collector (its `process`
        // feature); this one takes its place. Nothing to remove is not an error.
        let _ = prometheus::unregister(Box::new(ProcessCollector::for_self()));
        let collector = PreciseCpu(ProcessCollector::for_self());
        if let Err(e) = prometheus::register(Box::new(collector)) {
            tracing::warn!(error = %e, "process metrics not registered");
        }
    });
}

/// The process collector with `process_cpu_seconds_total` in fractions of a second: the
/// crate counts whole seconds, which left a 10 s benchmark phase of a service using a
/// fifth of a core with ±50 % error and `rate()` over a minute with steps of 1.7 %.
struct PreciseCpu(ProcessCollector);

const CPU_SECONDS: &str = "process_cpu_seconds_total";

impl Collector for PreciseCpu {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.0.collect();
        if let Some(seconds) = cpu_seconds() {
            for family in families.iter_mut().filter(|f| f.name() == CPU_SECONDS) {
                for metric in family.mut_metric() {
                    let mut counter = Counter::default();
                    counter.set_value(seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// User and system CPU time of this process, in seconds.
fn cpu_seconds() -> Option<f64> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    Some((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// `GET /metrics` in the Prometheus text format, from the process-wide default registry.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(render))
}

async fn render() -> impl IntoResponse {
    let families = prometheus::gather();
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut body) {
        body = format!("# metrics encoding failed: {e}\n").into_bytes();
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// The one `process_cpu_seconds_total` among `families`.
    fn cpu_in(families: &[MetricFamily]) -> f64 {
        let found: Vec<_> = families
            .iter()
            .filter(|f| f.name() == CPU_SECONDS)
            .collect();
        assert_eq!(found.len(), 1, "one {CPU_SECONDS}");
        found[0].get_metric()[0].get_counter().get_value()
    }

    #[test]
    fn the_registry_serves_cpu_seconds_in_fractions() {
        register_process_metrics();
        // Spin until this process's CPU time is half-way into a second, where a count of
        // whole seconds would be 0.4 s short or more.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spin = 0u64;
        while !(0.4..0.8).contains(&cpu_seconds().expect("stat").fract())
            && Instant::now() < deadline
        {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let seconds = cpu_in(&prometheus::gather());
        let own = cpu_seconds().expect("this process's stat");
        // Rendered just before `own` was read: at most that, and not whole seconds.
        assert!(
            seconds <= own && own - seconds < 0.3,
            "{seconds} against {own}"
        );
    }

    #[test]
    fn cpu_seconds_count_fractions_of_a_second() {
        let collector = PreciseCpu(ProcessCollector::for_self());
        let before = cpu_in(&collector.collect());
        let start = cpu_seconds().expect("this process's stat");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spin = 0u64;
        while cpu_seconds().expect("stat") - start < 0.25 && Instant::now() < deadline {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let used = cpu_in(&collector.collect()) - before;
        // Whole seconds would show 0 or 1 here.
        assert!((0.25..0.9).contains(&used), "{used} s of CPU collected");
    }
}
