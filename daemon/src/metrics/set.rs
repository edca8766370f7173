//! [`metric_set!`](crate::metric_set): a daemon's metrics declared once, in page order.
//!
//! One entry per family (or per sample of a family whose samples are separate fields) gives
//! the field the writers bump, its name, help text and labels; the macro writes from it:
//!
//! | item | what it is |
//! |---|---|
//! | `struct $Metrics` | the fields, bumped by the writers (attributes such as `#[repr(align(128))]` pass through) |
//! | `Default for $Metrics` | every metric at zero |
//! | `$Metrics::snapshot()` | every family read once (relaxed loads), then the `derived by` function |
//! | `struct $Snapshot` | one public field per family entry: its [`Reading`](crate::metrics::Reading) |
//! | `$Snapshot::merge()`, `Sum` | adding snapshots of several reactors or shards |
//! | `$Snapshot::write_prometheus()` | `# HELP`, `# TYPE` and the samples of every family, in order |
//! | `$Snapshot::totals()`, `by_label()` | the entries with a `json` key, for a JSON page |
//!
//! The declaration is the two structs (attributes and docs pass through; the second may say
//! `, derived by path::to_fn` to fill its [`Derived`](crate::metrics::Derived) entries with
//! `fn(&$Metrics, &mut $Snapshot)`), then `families { … }` in page order, then optionally
//! `unexported { … }`.
//!
//! A family entry is `field: Type => spec;` (`Type` a [`Metric`](crate::metrics::Metric))
//! where `spec` is, in this order, each part optional:
//!
//! - `"name", "help"`: starts a family (the name without the daemon's prefix). Its `# TYPE`
//!   is the field type's ([`Metric::KIND`](crate::metrics::Metric::KIND)).
//! - `[label = "value", …]`: fixed labels in front of the metric's own. An entry without a
//!   name adds samples to the family above it: that is how a family whose samples are
//!   separate fields (`logins_ok`, `logins_auth_failed`) is declared.
//! - `, json "key"`: the entry's total (value, sum over labels, or histogram count) under
//!   `key` in `totals()`, and its per-label totals under `key` in `by_label()`.
//!
//! Fields in the `unexported { … }` block are stored and never printed (watchdog ticks, a
//! node table behind a mutex); they need only `Default`.
//!
//! ```
//! use tether_daemon::metrics::{Counter, Family, Gauge};
//!
//! tether_daemon::label_set! {
//!     /// Why a link closed.
//!     pub enum Why: "reason" { Eof = "eof", Error = "error" }
//! }
//! tether_daemon::metric_set! {
//!     /// What one loop counts.
//!     pub struct Metrics;
//!     /// What one scrape read.
//!     #[derive(Debug, Clone, Default, PartialEq, Eq)]
//!     pub struct Snapshot;
//!     families {
//!         /// Links accepted.
//!         pub accepted: Counter => "links_accepted_total", "Links accepted.", json "accepted";
//!         /// Links closed, by reason.
//!         pub closed: Family<Why> => "links_closed_total", "Links closed, by reason.";
//!         pub online: Gauge => "sessions", "Sessions, by state." [state = "online"];
//!         pub away: Gauge => [state = "away"];
//!     }
//!     unexported {
//!         /// Loop iterations, for the watchdog.
//!         pub ticks: Counter,
//!     }
//! }
//!
//! let m = Metrics::default();
//! m.accepted.add(2);
//! m.closed.inc(Why::Eof);
//! m.online.set(1);
//! m.ticks.inc();
//! let s: Snapshot = [m.snapshot(), m.snapshot()].into_iter().sum();
//! let mut page = tether_daemon::prometheus::Text::new("x_", 512);
//! s.write_prometheus(&mut page);
//! assert_eq!(
//!     page.finish(),
//!     "# HELP x_links_accepted_total Links accepted.\n\
//!      ## TYPE x_links_accepted_total counter\n\
//!      x_links_accepted_total 4\n\
//!      ## HELP x_links_closed_total Links closed, by reason.\n\
//!      ## TYPE x_links_closed_total counter\n\
//!      x_links_closed_total{reason=\"eof\"} 2\n\
//!      x_links_closed_total{reason=\"error\"} 0\n\
//!      ## HELP x_sessions Sessions, by state.\n\
//!      ## TYPE x_sessions gauge\n\
//!      x_sessions{state=\"online\"} 2\n\
//!      x_sessions{state=\"away\"} 0\n"
//! );
//! assert_eq!(s.totals(), [("accepted", 4)]);
//! ```

/// Declares a daemon's metrics once, in page order; see [the module](crate::metrics) and
/// `daemon/src/metrics/set.rs` for the grammar and what it writes.
#[macro_export]
macro_rules! metric_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $Metrics:ident;
        $(#[$smeta:meta])*
        $svis:vis struct $Snapshot:ident $(, derived by $derive:path)?;
        families {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident : $ty:ty =>
                    $( $name:literal, $help:literal )?
                    $( [ $( $label:ident = $value:literal ),+ ] )?
                    $( , json $json:literal )?
                ;
            )+
        }
        $( unexported {
            $( $(#[$ometa:meta])* $ovis:vis $other:ident : $oty:ty ),* $(,)?
        } )?
    ) => {
        $(#[$meta])*
        $vis struct $Metrics {
            $( $(#[$fmeta])* $fvis $field: $ty, )+
            $($( $(#[$ometa])* $ovis $other: $oty, )*)?
        }

        impl ::core::default::Default for $Metrics {
            fn default() -> Self {
                $Metrics {
                    $( $field: ::core::default::Default::default(), )+
                    $($( $other: ::core::default::Default::default(), )*)?
                }
            }
        }

        #[allow(dead_code)]
        impl $Metrics {
            /// Every family read once (relaxed loads, one metric after another).
            pub fn snapshot(&self) -> $Snapshot {
                #[allow(unused_mut)]
                let mut snapshot = $Snapshot {
                    $( $field: $crate::metrics::Metric::snapshot(&self.$field), )+
                };
                $( $derive(self, &mut snapshot); )?
                snapshot
            }
        }

        $(#[$smeta])*
        $svis struct $Snapshot {
            $(
                $( #[doc = $help] )?
                pub $field: <$ty as $crate::metrics::Metric>::Snapshot,
            )+
        }

        #[allow(dead_code)]
        impl $Snapshot {
            /// Adds `other`'s values to these (wrapping), family by family.
            pub fn merge(&mut self, other: &Self) {
                $( $crate::metrics::Reading::merge(&mut self.$field, &other.$field); )+
            }

            /// Every family in declaration order: `# HELP`, `# TYPE`, then its samples.
            #[allow(unused_assignments)]
            pub fn write_prometheus(&self, page: &mut $crate::prometheus::Text) {
                let mut family = "";
                $(
                    $(
                        family = $name;
                        page.header($name, <$ty as $crate::metrics::Metric>::KIND, $help);
                    )?
                    $crate::metrics::Reading::write_samples(
                        &self.$field,
                        page,
                        family,
                        &[ $($( (stringify!($label), $value), )+)? ],
                    );
                )+
            }

            /// `(json key, total)` of every entry with a json key, in declaration order.
            pub fn totals(&self) -> ::std::vec::Vec<(&'static str, u64)> {
                ::std::vec![
                    $($( ($json, $crate::metrics::Reading::total(&self.$field)), )?)+
                ]
            }

            /// `(json key, [(label value, total)])` of every labelled entry with a json key.
            pub fn by_label(
                &self,
            ) -> ::std::vec::Vec<(&'static str, ::std::vec::Vec<(&'static str, u64)>)> {
                #[allow(unused_mut)]
                let mut out = ::std::vec::Vec::new();
                $($(
                    if let Some(labels) = $crate::metrics::Reading::by_label(&self.$field) {
                        out.push(($json, labels));
                    }
                )?)+
                out
            }
        }

        impl ::core::iter::Sum for $Snapshot {
            fn sum<I: Iterator<Item = $Snapshot>>(iter: I) -> $Snapshot {
                let mut total: $Snapshot = ::core::default::Default::default();
                for s in iter {
                    total.merge(&s);
                }
                total
            }
        }
    };
}
