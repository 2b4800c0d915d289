//! Each runner's exact share of a LoadTest's load.
//!
//! Rates, VUs, iteration counts and stage targets in a manifest are totals. Runner `i` of `n`
//! gets `total / n`, plus one of the `total % n` leftover units; the shares always sum to the
//! total and differ by at most one. Leftovers start at a different runner for each scenario, so
//! several small scenarios do not all land on runner 0.

use volley_crds::spec::{Executor, LoadTestSpec, Scenario, Stage};

/// Runner `index`'s share of `total` split across `runners`, with leftover units handed out
/// starting at runner `offset`.
///
/// `runners` of 0 is treated as 1, so the function is total.
pub fn share(total: u64, runners: u32, index: u32, offset: u32) -> u64 {
    let n = u64::from(runners.max(1));
    let i = u64::from(index) % n;
    // Position of this runner in the leftover hand-out order.
    let rank = (i + n - u64::from(offset) % n) % n;
    total / n + u64::from(rank < total % n)
}

/// One scenario as runner `index` of `runners` runs it: every total replaced by that runner's
/// share. Per-VU iteration counts are not totals and stay as written.
pub fn split_scenario(sc: &Scenario, runners: u32, index: u32, offset: u32) -> Scenario {
    let part = |v: u64| share(v, runners, index, offset);
    let mut out = sc.clone();
    out.rate = sc.rate.map(part);
    out.start_rate = sc.start_rate.map(part);
    out.vus = sc.vus.map(part);
    out.start_vus = sc.start_vus.map(part);
    out.max_vus = sc.max_vus.map(part);
    match sc.executor {
        Executor::SharedIterations => out.iterations = sc.iterations.map(part),
        // Per VU, not a total.
        Executor::PerVuIterations => {}
        // Not read by these executors (validation refuses it); kept as written.
        Executor::ConstantArrivalRate
        | Executor::RampingArrivalRate
        | Executor::ConstantVus
        | Executor::RampingVus => {}
    }
    out.stages = sc
        .stages
        .iter()
        .map(|st| Stage {
            duration: st.duration,
            target: part(st.target),
        })
        .collect();
    out
}

/// The whole spec as runner `index` of `spec.runners.parallelism` runs it.
pub fn split_spec(spec: &LoadTestSpec, index: u32) -> LoadTestSpec {
    let runners = spec.runners.parallelism.max(1);
    let mut out = spec.clone();
    out.scenarios = spec
        .scenarios
        .iter()
        .enumerate()
        .map(|(pos, sc)| {
            let offset = u32::try_from(pos % runners as usize).unwrap_or(0);
            split_scenario(sc, runners, index, offset)
        })
        .collect();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use volley_crds::duration::Duration;

    #[test]
    fn remainders_are_spread() {
        let shares: Vec<u64> = (0..4).map(|i| share(10, 4, i, 0)).collect();
        assert_eq!(shares, [3, 3, 2, 2]);
        let shifted: Vec<u64> = (0..4).map(|i| share(10, 4, i, 3)).collect();
        assert_eq!(shifted, [3, 2, 2, 3]);
        assert_eq!(share(7, 1, 0, 0), 7);
        assert_eq!(share(7, 0, 0, 0), 7);
    }

    fn scenario(executor: Executor) -> Scenario {
        Scenario {
            name: "s".into(),
            executor,
            rate: Some(101),
            start_rate: Some(7),
            vus: Some(10),
            start_vus: Some(3),
            max_vus: Some(55),
            iterations: Some(1001),
            stages: vec![
                Stage {
                    duration: Duration::from_secs(10),
                    target: 100,
                },
                Stage {
                    duration: Duration::from_secs(0),
                    target: 5,
                },
            ],
            ..Scenario::default()
        }
    }

    #[test]
    fn per_vu_iterations_are_not_split() {
        let sc = scenario(Executor::PerVuIterations);
        let part = split_scenario(&sc, 4, 1, 0);
        assert_eq!(part.iterations, Some(1001));
        assert_eq!(part.vus, Some(3));
    }

    #[test]
    fn several_scenarios_spread_their_leftovers_over_runners() {
        let mut spec = LoadTestSpec::default();
        spec.runners.parallelism = 3;
        spec.scenarios = (0..3)
            .map(|_| Scenario {
                rate: Some(1 + 3),
                ..scenario(Executor::ConstantArrivalRate)
            })
            .collect();
        // Each scenario has one leftover unit; they land on three different runners.
        let per_runner: Vec<u64> = (0..3)
            .map(|i| {
                split_spec(&spec, i)
                    .scenarios
                    .iter()
                    .map(|s| s.rate.unwrap())
                    .sum()
            })
            .collect();
        assert_eq!(per_runner, [4, 4, 4]);
    }

    proptest! {
        #[test]
        fn shares_sum_to_total_and_differ_by_at_most_one(
            total in 0u64..10_000_000_000, runners in 1u32..=1000, offset in 0u32..2000,
        ) {
            let shares: Vec<u64> = (0..runners).map(|i| share(total, runners, i, offset)).collect();
            prop_assert_eq!(shares.iter().sum::<u64>(), total);
            let max = *shares.iter().max().unwrap();
            let min = *shares.iter().min().unwrap();
            prop_assert!(max - min <= 1);
        }

        #[test]
        fn every_scenario_field_sums_to_its_total(
            executor in prop::sample::select(vec![
                Executor::ConstantArrivalRate, Executor::RampingArrivalRate, Executor::ConstantVus,
                Executor::RampingVus, Executor::SharedIterations, Executor::PerVuIterations,
            ]),
            rate in 1u64..1_000_000, vus in 1u64..100_000, iterations in 1u64..10_000_000,
            targets in prop::collection::vec(0u64..100_000, 1..6),
            runners in 1u32..=64,
        ) {
            let mut spec = LoadTestSpec::default();
            spec.runners.parallelism = runners;
            spec.scenarios = vec![Scenario {
                rate: Some(rate), vus: Some(vus), max_vus: Some(vus), iterations: Some(iterations),
                stages: targets.iter().map(|t| Stage { duration: Duration::from_secs(1), target: *t }).collect(),
                ..scenario(executor)
            }];
            let parts: Vec<Scenario> = (0..runners).map(|i| split_spec(&spec, i).scenarios.remove(0)).collect();
            let sum = |f: &dyn Fn(&Scenario) -> u64| parts.iter().map(f).sum::<u64>();
            prop_assert_eq!(sum(&|s| s.rate.unwrap()), rate);
            prop_assert_eq!(sum(&|s| s.vus.unwrap()), vus);
            prop_assert_eq!(sum(&|s| s.max_vus.unwrap()), vus);
            for (k, t) in targets.iter().enumerate() {
                prop_assert_eq!(sum(&|s| s.stages[k].target), *t);
                let max = parts.iter().map(|s| s.stages[k].target).max().unwrap();
                let min = parts.iter().map(|s| s.stages[k].target).min().unwrap();
                prop_assert!(max - min <= 1);
            }
            if executor == Executor::SharedIterations {
                prop_assert_eq!(sum(&|s| s.iterations.unwrap()), iterations);
            } else {
                prop_assert!(parts.iter().all(|s| s.iterations == Some(iterations)));
            }
            // Durations and steps are not touched.
            prop_assert!(parts.iter().all(|s| s.stages.len() == targets.len() && s.steps == spec.scenarios[0].steps));
        }
    }
}
