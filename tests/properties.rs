//! Property tests: for any sequence of valid and invalid commands, split into any batches,
//! folding the log from position 1 gives the live state, and applying the same commands again
//! changes nothing.

use csp_ledger::intake::Submission;
use csp_ledger::store::log::LogOptions;
use csp_ledger::store::read::replay;
use csp_ledger::writer::Ledger;
use csp_ledger_schemas::command::{Actor, CommandEnvelope, CreditOutcome, RevenueCategory};
use csp_ledger_testkit::Kit;
use proptest::prelude::*;
use uuid::Uuid;

const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "NL"];

/// Builds command number `kind` with argument indexes `a`, `b`, `c` over small pools, so that
/// random sequences hit both accepted and rejected paths.
fn build(
    kit: &mut Kit,
    partners: &[Uuid],
    customers: &[Uuid],
    invitations: &[Uuid],
    kind: u8,
    a: usize,
    b: usize,
    c: usize,
) -> CommandEnvelope {
    let p = partners[a % partners.len()];
    let q = partners[b % partners.len()];
    let cu = customers[c % customers.len()];
    let inv = invitations[(a + b + c) % invitations.len()];
    let country = COUNTRIES[c % COUNTRIES.len()];
    match kind % 26 {
        0 => kit.enroll(
            p,
            COUNTRIES[a % COUNTRIES.len()],
            if c % 5 == 0 {
                "x@gmail.com"
            } else {
                "ops@partner.example"
            },
        ),
        1 => kit.verify(p),
        2 => kit.reject_verification(p),
        3 => kit.associate_mpn(
            p,
            &format!("{}", 1000 + b % 3),
            COUNTRIES[c % COUNTRIES.len()],
        ),
        4 => kit.sign_mpa_as(
            p,
            if c % 4 == 0 {
                "admin_agent"
            } else {
                "global_admin"
            },
        ),
        5 => kit.authorize_provider(p),
        6 => kit.invite_reseller(inv, p, q),
        7 => kit.accept_invitation(inv, q),
        8 => kit.decline_invitation(inv, q),
        9 => kit.revoke_invitation(inv, p),
        10 => kit.remove_admin_access(p, q),
        11 => kit.end_relationship(p, q),
        12 => kit.register_customer(p, cu, country, (b % 3 == 0).then_some(q)),
        13 => kit.accept_customer_agreement(cu),
        14 => kit.invite_customer(inv, p, (b % 4 != 0).then_some(q), cu),
        15 => kit.accept_customer_invitation(inv, cu),
        16 => kit.end_customer_relationship(
            if b % 2 == 0 {
                Actor::operator()
            } else {
                Actor::partner(p, "admin_agent")
            },
            cu,
            p,
        ),
        17 => kit.record_revenue(
            p,
            &format!("2025-{:02}", 1 + b % 12),
            if c % 3 == 0 {
                RevenueCategory::PerpetualSoftware
            } else {
                RevenueCategory::Cloud
            },
            if c % 4 == 0 {
                "-150000.00"
            } else {
                "100000.00"
            },
        ),
        18 => kit.purchase_support_plan(p),
        19 => kit.attest_infrastructure(p, b % 3 != 0, c % 3 != 0),
        20 => kit.register_managed_service(p),
        21 => kit.apply_for_direct_bill(p),
        22 => kit.record_credit_check(
            p,
            if b % 3 == 0 {
                CreditOutcome::Declined
            } else {
                CreditOutcome::Approved
            },
        ),
        23 => kit.accept_direct_bill_terms_as(
            p,
            if c % 3 == 0 {
                "admin_agent"
            } else {
                "global_admin"
            },
        ),
        24 => kit.transition_to_indirect_reseller(p),
        _ => {
            let mut command = kit.verify(p);
            command.actor = Actor::partner(q, "global_admin");
            command
        }
    }
}

/// A happy onboarding a random run starts with a prefix of.
fn happy_script(kit: &mut Kit, partners: &[Uuid], customers: &[Uuid]) -> Vec<CommandEnvelope> {
    let mut out = kit.onboard_provider(partners[0], "DE");
    out.extend(kit.onboard(partners[1], "FR"));
    out.extend(kit.connect(partners[0], partners[1]));
    out.extend(kit.onboard(partners[3], "NL"));
    out.push(kit.register_customer(partners[1], customers[0], "FR", None));
    out.push(kit.accept_customer_agreement(customers[0]));
    let invitation = kit.id();
    out.push(kit.invite_customer(invitation, partners[1], Some(partners[0]), customers[0]));
    out.push(kit.accept_customer_invitation(invitation, customers[0]));
    out.extend(kit.direct_bill_partner(partners[2], "US"));
    out
}

fn deterministic_ledger(dir: &std::path::Path) -> Ledger {
    let mut counter = 0u128;
    Ledger::open_with(
        dir,
        LogOptions { fsync: false },
        Box::new(chrono::Utc::now),
        Box::new(move || {
            counter += 1;
            counter.to_be_bytes()
        }),
    )
    .unwrap()
}

fn run(
    prefix: usize,
    actions: &[(u8, usize, usize, usize, bool)],
    splits: &[usize],
    checkpoint_after: usize,
) -> Result<(), TestCaseError> {
    let mut kit = Kit::new();
    let partners: Vec<Uuid> = (0..5).map(|_| kit.id()).collect();
    let customers: Vec<Uuid> = (0..3).map(|_| kit.id()).collect();
    let invitations: Vec<Uuid> = (0..4).map(|_| kit.id()).collect();
    let mut commands: Vec<String> = happy_script(&mut kit, &partners, &customers)
        .into_iter()
        .take(prefix)
        .map(|c| c.to_json())
        .collect();
    for &(kind, a, b, c, repeat) in actions {
        if repeat && !commands.is_empty() {
            // A client retry of an earlier command, byte for byte.
            let earlier = commands[(a * 7 + b) % commands.len()].clone();
            commands.push(earlier);
        } else {
            commands.push(
                build(&mut kit, &partners, &customers, &invitations, kind, a, b, c).to_json(),
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = deterministic_ledger(dir.path());
    let mut rest: &[String] = &commands;
    let mut split = splits.iter().cycle();
    let mut accepted = 0;
    let mut batches = 0usize;
    let mut checkpoint_at = None;
    while !rest.is_empty() {
        let size = (*split.next().unwrap_or(&1)).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(size);
        rest = tail;
        let result = ledger
            .submit(
                batch
                    .iter()
                    .map(|l| Submission::parse(None, l.as_bytes()))
                    .collect(),
            )
            .unwrap();
        accepted += result
            .outcomes
            .iter()
            .filter(|o| o.kind() == csp_ledger_schemas::OutcomeKind::Accepted)
            .count();
        batches += 1;
        if batches == checkpoint_after {
            checkpoint_at = Some(ledger.checkpoint().unwrap());
        }
    }
    let live = ledger.state().clone();
    let head = ledger.head();
    prop_assert_eq!(live.position, head.position);
    // Replay from position 1 equals the live state.
    let replayed = replay(ledger.log(), u64::MAX).unwrap();
    prop_assert_eq!(&replayed, &live);
    // Reopening (checkpoint + tail, or replay; idempotency index from the outcome log) gives
    // the same state.
    drop(ledger);
    if let Some(position) = checkpoint_at {
        let checkpoint = csp_ledger::store::checkpoint::load(
            dir.path(),
            &csp_ledger::store::checkpoint::MacKey::PUBLIC,
        )
        .unwrap()
        .unwrap();
        prop_assert_eq!(checkpoint.position, position);
    }
    let mut ledger = deterministic_ledger(dir.path());
    prop_assert_eq!(ledger.state(), &live);
    // The auditor's rebuild from position 1 agrees with the checkpoint.
    let report = csp_ledger::store::rebuild::rebuild(
        ledger.log(),
        false,
        &csp_ledger::store::checkpoint::MacKey::PUBLIC,
    )
    .unwrap();
    prop_assert_eq!(report.equal, checkpoint_at.map(|_| true));
    prop_assert_eq!(report.events, live.position);
    // The same commands again change nothing: every one is a duplicate.
    let again = ledger
        .submit(
            commands
                .iter()
                .map(|l| Submission::parse(None, l.as_bytes()))
                .collect(),
        )
        .unwrap();
    prop_assert!(again
        .outcomes
        .iter()
        .all(|o| o.kind() == csp_ledger_schemas::OutcomeKind::Duplicate));
    prop_assert_eq!(ledger.state(), &live);
    prop_assert_eq!(ledger.head().position, head.position);
    prop_assert!(accepted <= commands.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn replay_equals_live_equals_checkpoint_plus_tail_and_reapplying_changes_nothing(
        prefix in 0usize..60,
        actions in proptest::collection::vec((0u8..26, 0usize..5, 0usize..5, 0usize..7, proptest::bool::weighted(0.1)), 0..80),
        splits in proptest::collection::vec(1usize..20, 1..6),
        checkpoint_after in 0usize..8,
    ) {
        run(prefix, &actions, &splits, checkpoint_after)?;
    }
}

#[test]
fn a_long_realistic_run_replays_to_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = deterministic_ledger(dir.path());
    let lines: Vec<String> = csp_ledger_testkit::workload::Generator::new(7)
        .take(5000)
        .map(|c| c.to_json())
        .collect();
    for chunk in lines.chunks(700) {
        ledger
            .submit(
                chunk
                    .iter()
                    .map(|l| Submission::parse(None, l.as_bytes()))
                    .collect(),
            )
            .unwrap();
    }
    assert!(ledger.state().position > 5000);
    assert_eq!(&replay(ledger.log(), u64::MAX).unwrap(), ledger.state());
}

/// The claim string of an actor, written independently of `Principal::may_act_as`.
fn claim(actor: &Actor) -> String {
    let kind = serde_json::to_value(actor.kind).unwrap();
    match actor.id {
        Some(id) => format!("{}:{id}", kind.as_str().unwrap()),
        None => kind.as_str().unwrap().to_string(),
    }
}

/// The oracle of SPEC.md section 10: a grant equal to the claim, or `<kind>:*`.
fn may_claim(grants: &[String], actor: &Actor) -> bool {
    let claim = claim(actor);
    let wildcard = format!("{}:*", claim.split(':').next().unwrap_or(""));
    grants
        .iter()
        .any(|g| *g == claim || (*g == wildcard && claim != "operator"))
}

fn run_as_principals(
    prefix: usize,
    actions: &[(u8, usize, usize, usize, usize)],
    masks: &[u16],
    splits: &[usize],
) -> Result<(), TestCaseError> {
    use csp_ledger::auth::{Principal, ReadGrants};
    use csp_ledger_schemas::OutcomeKind;
    use std::sync::Arc;
    let mut kit = Kit::new();
    let partners: Vec<Uuid> = (0..5).map(|_| kit.id()).collect();
    let customers: Vec<Uuid> = (0..3).map(|_| kit.id()).collect();
    let invitations: Vec<Uuid> = (0..4).map(|_| kit.id()).collect();
    // Grants to draw from: every form, over the pools' ids.
    let mut pool = vec![
        "operator".to_string(),
        "partner:*".into(),
        "customer:*".into(),
    ];
    pool.extend(partners.iter().take(3).map(|p| format!("partner:{p}")));
    pool.extend(customers.iter().take(2).map(|c| format!("customer:{c}")));
    let principals: Vec<(Vec<String>, Arc<Principal>)> = masks
        .iter()
        .enumerate()
        .map(|(i, mask)| {
            let grants: Vec<String> = pool
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, g)| g.clone())
                .collect();
            let principal = Principal {
                id: format!("principal-{i}").parse().unwrap(),
                act_as: grants.iter().map(|g| g.parse().unwrap()).collect(),
                read: ReadGrants::default(),
            };
            (grants, Arc::new(principal))
        })
        .collect();
    // The happy prefix comes from the local administrator, so that there is state to attack.
    let mut submissions: Vec<(Option<usize>, CommandEnvelope)> =
        happy_script(&mut kit, &partners, &customers)
            .into_iter()
            .take(prefix)
            .map(|c| (None, c))
            .collect();
    for &(kind, a, b, c, who) in actions {
        let command = build(&mut kit, &partners, &customers, &invitations, kind, a, b, c);
        submissions.push((Some(who % principals.len()), command));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = deterministic_ledger(dir.path());
    let mut rest: &[(Option<usize>, CommandEnvelope)] = &submissions;
    let mut split = splits.iter().cycle();
    while !rest.is_empty() {
        let size = (*split.next().unwrap_or(&1)).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(size);
        rest = tail;
        let before = ledger.head().position;
        let result = ledger
            .submit(
                batch
                    .iter()
                    .map(|(who, command)| match who {
                        None => Submission::parse(None, command.to_json().as_bytes()),
                        Some(i) => Submission::parse_as(
                            None,
                            command.to_json().as_bytes(),
                            Arc::clone(&principals[*i].1),
                        ),
                    })
                    .collect(),
            )
            .unwrap();
        let mut events = 0u64;
        for ((who, command), outcome) in batch.iter().zip(&result.outcomes) {
            let permitted = who.is_none_or(|i| may_claim(&principals[i].0, &command.actor));
            let code = match outcome {
                csp_ledger::writer::outcome::Outcome::Rejected { rejection, .. } => {
                    Some(rejection.code.as_str())
                }
                _ => None,
            };
            if !permitted {
                prop_assert_eq!(code, Some("actor_not_permitted"), "{:?}", command.actor);
                prop_assert_ne!(outcome.kind(), OutcomeKind::Accepted);
            } else {
                prop_assert_ne!(code, Some("actor_not_permitted"), "{:?}", command.actor);
            }
            if let csp_ledger::writer::outcome::Outcome::Accepted { events: range, .. } = outcome {
                prop_assert!(permitted);
                events += range.len() as u64;
            }
        }
        // Every appended event belongs to an accepted, permitted command.
        prop_assert_eq!(ledger.head().position, before + events);
    }
    prop_assert_eq!(&replay(ledger.log(), u64::MAX).unwrap(), ledger.state());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// SPEC.md section 10: for random principals with random grants and random commands, no
    /// command whose actor its principal may not claim ever appends an event, and every such
    /// command is answered `actor_not_permitted`.
    #[test]
    fn no_command_appends_an_event_for_an_actor_its_principal_may_not_claim(
        prefix in 0usize..60,
        actions in proptest::collection::vec((0u8..26, 0usize..5, 0usize..5, 0usize..7, 0usize..4), 1..80),
        masks in proptest::collection::vec(0u16..256, 1..5),
        splits in proptest::collection::vec(1usize..20, 1..6),
    ) {
        run_as_principals(prefix, &actions, &masks, &splits)?;
    }
}
