//! Lag-aware admission: when db-writer falls too far behind, new events of a lane are refused
//! with 503 + `Retry-After` instead of growing a backlog nobody can drain in time.
//!
//! A background task samples how far behind the writer is (the `lag` crate, the same judgement
//! as query-service's pipeline view) every `sample_interval`; a request only compares that
//! sample with its lanes' thresholds. Both lanes are judged against the pipeline's totals (depth
//! of both lanes, oldest unstored record of either): the writer drains both, and a normal-lane
//! backlog delays critical events' batches too. The critical lane's thresholds must be at least
//! the normal lane's, so it sheds last.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::http::StatusCode;
use chassis::problem::Problem;
use rdkafka::{consumer::BaseConsumer, error::KafkaError};
use schemas::Priority;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    metrics,
    settings::{AdmissionSettings, LaneLimits},
};

/// How far behind the writer was, at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub taken: Instant,
    pub depth: u64,
    pub oldest_age: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("admission.{lane_setting}: the critical lane's limit ({critical}) is below the normal lane's ({normal}); critical events must be shed last")]
    CriticalBelowNormal {
        lane_setting: &'static str,
        normal: String,
        critical: String,
    },
    #[error("admission.stale_after ({stale_after:?}) must be longer than admission.sample_interval ({sample_interval:?}), or every sample goes stale before the next one and admission fails open")]
    StaleBeforeNextSample {
        stale_after: Duration,
        sample_interval: Duration,
    },
    #[error(
        "admission.writer_group is empty: it names db-writer's consumer group (its kafka.group_id)"
    )]
    NoWriterGroup,
    #[error("admission: cannot read the writer's lag from Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// What admission says about one lane of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Admit,
    /// No usable sample (none yet, or older than `stale_after`): admitted. Durability comes
    /// from the brokers' acks, and the producer's bounded queue still pushes back; refusing
    /// every request because Kafka's admin side hiccups would turn a blind spot into an outage.
    FailOpen,
    Shed(String),
}

/// Refuses `settings` whose critical limits are below the normal ones, and (when admission is
/// on) a sampling that could never be trusted or a missing writer group.
pub fn validate(settings: &AdmissionSettings) -> Result<(), AdmissionError> {
    if settings.enabled {
        if settings.stale_after <= settings.sample_interval {
            return Err(AdmissionError::StaleBeforeNextSample {
                stale_after: settings.stale_after,
                sample_interval: settings.sample_interval,
            });
        }
        if settings.writer_group.trim().is_empty() {
            return Err(AdmissionError::NoWriterGroup);
        }
    }
    let (normal, critical) = (&settings.normal, &settings.critical);
    if below(normal.max_depth, critical.max_depth) {
        return Err(AdmissionError::CriticalBelowNormal {
            lane_setting: "critical.max_depth",
            normal: limit_text(normal.max_depth),
            critical: limit_text(critical.max_depth),
        });
    }
    let (n, c) = (
        u64::try_from(normal.max_oldest_age.as_millis()).unwrap_or(u64::MAX),
        u64::try_from(critical.max_oldest_age.as_millis()).unwrap_or(u64::MAX),
    );
    if below(n, c) {
        return Err(AdmissionError::CriticalBelowNormal {
            lane_setting: "critical.max_oldest_age",
            normal: limit_text(n),
            critical: limit_text(c),
        });
    }
    Ok(())
}

/// Whether `critical` is a tighter limit than `normal` (0 means no limit).
fn below(normal: u64, critical: u64) -> bool {
    critical != 0 && (normal == 0 || critical < normal)
}

fn limit_text(limit: u64) -> String {
    if limit == 0 {
        "unlimited".into()
    } else {
        limit.to_string()
    }
}

/// The verdict for a lane with `limits`, given the latest sample.
pub fn judge(
    limits: &LaneLimits,
    sample: Option<&Sample>,
    now: Instant,
    stale_after: Duration,
) -> Verdict {
    let Some(sample) = sample.filter(|s| now.saturating_duration_since(s.taken) <= stale_after)
    else {
        return Verdict::FailOpen;
    };
    if limits.max_depth != 0 && sample.depth > limits.max_depth {
        return Verdict::Shed(format!(
            "{} events are acknowledged and not yet stored (limit {})",
            sample.depth, limits.max_depth
        ));
    }
    if !limits.max_oldest_age.is_zero() && sample.oldest_age > limits.max_oldest_age {
        return Verdict::Shed(format!(
            "the oldest event not yet stored is {:.1} s old (limit {:?})",
            sample.oldest_age.as_secs_f64(),
            limits.max_oldest_age
        ));
    }
    Verdict::Admit
}

/// Admission for one gateway: the latest sample and the limits.
pub struct Admission {
    settings: AdmissionSettings,
    latest: watch::Receiver<Option<Sample>>,
    retry_after: Duration,
    /// Set while requests are admitted without a fresh sample, so the warning is logged once
    /// per episode rather than once per request.
    failing_open: AtomicBool,
}

impl Admission {
    /// Starts sampling the lag of `settings.writer_group` on `topics`; `None` when admission
    /// is off.
    pub fn start(
        settings: &AdmissionSettings,
        kafka: &rdkafka::config::ClientConfig,
        topics: Vec<String>,
        retry_after: Duration,
        shutdown: CancellationToken,
    ) -> Result<Option<Arc<Admission>>, AdmissionError> {
        validate(settings)?;
        metrics::init_admission(settings.enabled);
        if !settings.enabled {
            return Ok(None);
        }
        let observer = Arc::new(lag::observer(kafka, &settings.writer_group)?);
        let peeker = Arc::new(lag::observer(kafka, &settings.writer_group)?);
        let (publish, latest) = watch::channel(None);
        tokio::spawn(sample_until(
            Sampler {
                observer,
                peeker,
                topics,
            },
            settings.sample_interval,
            publish,
            shutdown,
        ));
        Ok(Some(Arc::new(Admission {
            settings: settings.clone(),
            latest,
            retry_after,
            failing_open: AtomicBool::new(false),
        })))
    }

    /// `Ok` when every lane of the request may pass; a 503 problem naming why otherwise (the
    /// request is refused whole, like every other refusal, so its retry is whole too).
    pub fn admit(&self, lanes: &[Priority]) -> Result<(), Problem> {
        let sample = *self.latest.borrow();
        let now = Instant::now();
        for lane in lanes {
            let (limits, label) = match lane {
                Priority::Normal => (&self.settings.normal, "normal"),
                Priority::Critical => (&self.settings.critical, "critical"),
            };
            let verdict = judge(limits, sample.as_ref(), now, self.settings.stale_after);
            self.note_fail_open(&verdict, sample.as_ref(), now);
            match verdict {
                Verdict::Admit => {}
                Verdict::FailOpen => {
                    metrics::ADMISSION_FAIL_OPEN.inc();
                }
                Verdict::Shed(why) => {
                    metrics::ADMISSION_SHED.with_label_values(&[label]).inc();
                    return Err(Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "pipeline-behind",
                        format!(
                            "the pipeline is behind: {why}; {label} events are refused until it \
                             catches up. Retry later with the same event ids; nothing was published"
                        ),
                    )
                    .retry_after(self.retry_after));
                }
            }
        }
        Ok(())
    }

    /// Logs when admission starts and stops failing open; the plain load keeps the common
    /// case (a fresh sample, nothing to log) free of writes to a shared cache line.
    fn note_fail_open(&self, verdict: &Verdict, sample: Option<&Sample>, now: Instant) {
        let failing = *verdict == Verdict::FailOpen;
        if self.failing_open.load(Ordering::Relaxed) == failing
            || self.failing_open.swap(failing, Ordering::Relaxed) == failing
        {
            return;
        }
        if failing {
            let age = sample.map(|s| now.saturating_duration_since(s.taken));
            warn!(
                sample_age = ?age,
                stale_after = ?self.settings.stale_after,
                "admission: no fresh lag sample, admitting every lane (failing open) until Kafka answers again"
            );
        } else {
            info!("admission: lag samples are fresh again, limits apply");
        }
    }
}

struct Sampler {
    observer: Arc<BaseConsumer>,
    peeker: Arc<BaseConsumer>,
    topics: Vec<String>,
}

impl Sampler {
    /// One sample; blocks on the network (bounded by the lag crate's timeouts).
    fn take(&self) -> Result<Sample, KafkaError> {
        let observed = lag::partitions(&self.observer, &self.topics)?;
        let oldest = lag::oldest_timestamps(&self.peeker, &lag::lagging(&observed))?;
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        let behind = lag::behind(&observed, &oldest, now_ms);
        Ok(Sample {
            taken: Instant::now(),
            depth: behind.depth,
            oldest_age: Duration::from_secs_f64(behind.oldest_age_seconds.max(0.0)),
        })
    }
}

async fn sample_until(
    sampler: Sampler,
    interval: Duration,
    publish: watch::Sender<Option<Sample>>,
    shutdown: CancellationToken,
) {
    let sampler = Arc::new(sampler);
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let taking = sampler.clone();
        // A sample can block for the lag crate's timeouts when Kafka is unreachable; shutdown
        // does not wait for it (the blocking thread ends on its own timeout).
        let taken = tokio::select! {
            _ = shutdown.cancelled() => return,
            taken = tokio::task::spawn_blocking(move || taking.take()) => taken,
        };
        match taken {
            Ok(Ok(sample)) => {
                metrics::ADMISSION_DEPTH.set(i64::try_from(sample.depth).unwrap_or(i64::MAX));
                metrics::ADMISSION_OLDEST_AGE.set(sample.oldest_age.as_secs_f64());
                publish.send_replace(Some(sample));
            }
            // The last sample ages out after `stale_after`, and admission fails open.
            Ok(Err(e)) => warn!(error = %e, "admission: lag sample failed"),
            Err(e) => warn!(error = %e, "admission: lag sampler task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_depth: u64, max_oldest_age_secs: u64) -> LaneLimits {
        LaneLimits {
            max_depth,
            max_oldest_age: Duration::from_secs(max_oldest_age_secs),
        }
    }

    fn sample(depth: u64, age_secs: u64, taken: Instant) -> Sample {
        Sample {
            taken,
            depth,
            oldest_age: Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn sheds_past_either_threshold_and_admits_below_them() {
        let now = Instant::now();
        let stale = Duration::from_secs(10);
        let lane = limits(100, 30);
        assert_eq!(
            judge(&lane, Some(&sample(100, 30, now)), now, stale),
            Verdict::Admit
        );
        assert!(matches!(
            judge(&lane, Some(&sample(101, 0, now)), now, stale),
            Verdict::Shed(why) if why.contains("101") && why.contains("100")
        ));
        assert!(matches!(
            judge(&lane, Some(&sample(0, 31, now)), now, stale),
            Verdict::Shed(why) if why.contains("31.0 s")
        ));
        // Zero is no limit.
        assert_eq!(
            judge(
                &limits(0, 0),
                Some(&sample(u64::MAX, 3600, now)),
                now,
                stale
            ),
            Verdict::Admit
        );
    }

    #[test]
    fn fails_open_without_a_fresh_sample() {
        let now = Instant::now();
        let stale = Duration::from_secs(10);
        let lane = limits(1, 1);
        assert_eq!(judge(&lane, None, now, stale), Verdict::FailOpen);
        let old = sample(1_000, 1_000, now);
        let later = now + Duration::from_secs(11);
        assert_eq!(judge(&lane, Some(&old), later, stale), Verdict::FailOpen);
        assert!(matches!(
            judge(&lane, Some(&old), now + Duration::from_secs(9), stale),
            Verdict::Shed(_)
        ));
    }

    #[test]
    fn critical_limits_may_not_be_tighter_than_normal_ones() {
        let mut settings = AdmissionSettings {
            normal: limits(1_000, 30),
            critical: limits(10_000, 120),
            ..AdmissionSettings::default()
        };
        assert!(validate(&settings).is_ok());
        settings.critical = limits(999, 120);
        assert!(matches!(
            validate(&settings),
            Err(AdmissionError::CriticalBelowNormal {
                lane_setting: "critical.max_depth",
                ..
            })
        ));
        settings.critical = limits(0, 10);
        assert!(matches!(
            validate(&settings),
            Err(AdmissionError::CriticalBelowNormal {
                lane_setting: "critical.max_oldest_age",
                ..
            })
        ));
        // A limited critical lane under an unlimited normal one would shed critical first.
        settings.normal = limits(0, 0);
        settings.critical = limits(5, 0);
        assert!(validate(&settings).is_err());
        settings.critical = limits(0, 0);
        assert!(validate(&settings).is_ok());
    }

    #[test]
    fn the_defaults_are_valid_and_a_sample_must_outlive_the_interval() {
        let mut settings = AdmissionSettings {
            enabled: true,
            ..AdmissionSettings::default()
        };
        assert!(validate(&settings).is_ok());
        settings.stale_after = settings.sample_interval;
        let error = validate(&settings).unwrap_err();
        assert!(
            matches!(error, AdmissionError::StaleBeforeNextSample { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("admission.stale_after"));
        // Only judged when admission is on: an unused section does not stop a gateway.
        settings.enabled = false;
        assert!(validate(&settings).is_ok());
        settings = AdmissionSettings {
            enabled: true,
            writer_group: " ".into(),
            ..AdmissionSettings::default()
        };
        assert!(matches!(
            validate(&settings),
            Err(AdmissionError::NoWriterGroup)
        ));
    }

    #[test]
    fn a_request_is_refused_whole_when_one_of_its_lanes_sheds() {
        let (publish, latest) = watch::channel(None);
        let admission = Admission {
            settings: AdmissionSettings {
                enabled: true,
                normal: limits(100, 0),
                critical: limits(1_000, 0),
                ..AdmissionSettings::default()
            },
            latest,
            retry_after: Duration::from_secs(3),
            failing_open: AtomicBool::new(false),
        };
        // No sample yet: every lane fails open.
        assert!(admission.admit(&[Priority::Normal]).is_ok());
        assert!(admission.failing_open.load(Ordering::Relaxed));
        publish.send_replace(Some(sample(500, 0, Instant::now())));
        assert!(admission.admit(&[Priority::Critical]).is_ok());
        assert!(!admission.failing_open.load(Ordering::Relaxed));
        let refused = admission
            .admit(&[Priority::Critical, Priority::Normal])
            .unwrap_err();
        assert_eq!(refused.status, 503);
        assert!(refused.problem_type.ends_with("pipeline-behind"));
        assert_eq!(refused.retry_after, Some(Duration::from_secs(3)));
        assert!(
            refused.detail.contains("500") && refused.detail.contains("limit 100"),
            "{}",
            refused.detail
        );
        assert!(
            refused.detail.contains("normal events"),
            "{}",
            refused.detail
        );
        publish.send_replace(Some(sample(5_000, 0, Instant::now())));
        assert!(admission.admit(&[Priority::Critical]).is_err());
    }
}
