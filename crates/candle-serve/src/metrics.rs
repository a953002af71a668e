//! What `GET /metrics` reports, in Prometheus' text format: requests by
//! endpoint and status, tokens, queue and batch occupancy, and the latencies
//! clients feel (time to first token, time between tokens).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::time::Instant;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    prompt_tokens: IntCounterVec,
    cached_tokens: IntCounterVec,
    generated_tokens: IntCounterVec,
    queued: IntGaugeVec,
    running: IntGaugeVec,
    slots: IntGaugeVec,
    in_flight: IntGaugeVec,
    time_to_first_token: HistogramVec,
    inter_token_latency: HistogramVec,
}

/// Seconds, from a fast decode step to a long queue wait.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("hanzo_candle".into()), None)
            .expect("a constant, valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["model"]).expect("a valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, &["model"]).expect("a valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        Self {
            requests: counter(
                "requests_total",
                "HTTP requests answered, by endpoint and status code",
                &["endpoint", "status"],
            ),
            prompt_tokens: counter(
                "prompt_tokens_total",
                "Prompt tokens of requests whose prompt was processed, reused ones included",
                &["model"],
            ),
            cached_tokens: counter(
                "cached_tokens_total",
                "Prompt tokens reused from a free slot's cache instead of computed",
                &["model"],
            ),
            generated_tokens: counter("generated_tokens_total", "Tokens generated", &["model"]),
            queued: gauge("queue_depth", "Sequences waiting for a free KV slot"),
            running: gauge(
                "running_sequences",
                "Sequences holding a KV slot (prefilling or decoding)",
            ),
            slots: gauge("slots", "KV slots of the model"),
            in_flight: gauge(
                "requests_in_flight",
                "Choices admitted (running or queued) and not yet answered",
            ),
            time_to_first_token: histogram(
                "time_to_first_token_seconds",
                "From a request's arrival to its first generated text",
            ),
            inter_token_latency: histogram(
                "inter_token_latency_seconds",
                "Between successive pieces of generated text of one choice",
            ),
            registry,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    pub fn answered(&self, endpoint: &str, status: u16) {
        self.requests
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
    }

    pub fn prompt_processed(&self, model: &str, tokens: usize, cached: usize) {
        self.prompt_tokens
            .with_label_values(&[model])
            .inc_by(tokens as u64);
        self.cached_tokens
            .with_label_values(&[model])
            .inc_by(cached as u64);
    }

    pub fn generated(&self, model: &str, tokens: usize) {
        self.generated_tokens
            .with_label_values(&[model])
            .inc_by(tokens as u64);
    }

    /// The engine's occupancy after a step.
    pub fn occupancy(&self, model: &str, slots: usize, running: usize, queued: usize) {
        self.slots.with_label_values(&[model]).set(slots as i64);
        self.running.with_label_values(&[model]).set(running as i64);
        self.queued.with_label_values(&[model]).set(queued as i64);
    }

    pub fn set_in_flight(&self, model: &str, choices: usize) {
        self.in_flight
            .with_label_values(&[model])
            .set(choices as i64);
    }

    pub fn latency_clock(&self, model: &str, choices: usize, arrived: Instant) -> LatencyClock {
        LatencyClock {
            time_to_first_token: self.time_to_first_token.with_label_values(&[model]),
            inter_token_latency: self.inter_token_latency.with_label_values(&[model]),
            arrived,
            first_seen: false,
            last: vec![None; choices],
        }
    }
}

/// Times one request's output as its client receives it.
pub struct LatencyClock {
    time_to_first_token: prometheus::Histogram,
    inter_token_latency: prometheus::Histogram,
    arrived: Instant,
    first_seen: bool,
    last: Vec<Option<Instant>>,
}

impl LatencyClock {
    /// Text of `choice` arrived.
    pub fn text(&mut self, choice: usize) {
        let now = Instant::now();
        self.first_output(now);
        if let Some(slot) = self.last.get_mut(choice) {
            if let Some(previous) = slot.replace(now) {
                self.inter_token_latency
                    .observe((now - previous).as_secs_f64());
            }
        }
    }

    /// `choice` finished; a request that ended without text still had its
    /// first (end-of-sequence) token.
    pub fn finished(&mut self) {
        self.first_output(Instant::now());
    }

    fn first_output(&mut self, now: Instant) {
        if !self.first_seen {
            self.first_seen = true;
            self.time_to_first_token
                .observe((now - self.arrived).as_secs_f64());
        }
    }
}
