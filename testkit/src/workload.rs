//! A deterministic generator of realistic command streams: providers and resellers enrolling
//! across regions, invitations, customers, revenue, the direct-bill path, and a share of
//! commands that break rules or repeat (so that rejections and duplicates are exercised too).
//! Used by the benchmark, the crash test and `csp-ledger generate`.

use chrono::{DateTime, Duration, TimeZone, Utc};
use csp_ledger_schemas::command::{
    self as c, Actor, Command, CommandEnvelope, CreditOutcome, RevenueCategory, SupportPlan,
    VerificationOutcome,
};
use csp_ledger_schemas::values::{Country, Email, Month, UsdAmount};
use uuid::Uuid;

/// Resellers per provider in a generated cohort.
pub const RESELLERS_PER_PROVIDER: usize = 40;

/// Markets the generator enrolls partners in: (countries of one region).
const MARKETS: &[&[&str]] = &[
    &["DE", "FR", "NL", "ES", "IT", "SE", "PL"],
    &["US"],
    &["JP"],
    &["AU", "FJ"],
    &["BR"],
];

/// xorshift64*: small, deterministic, good enough for workload shapes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn uuid(&mut self) -> Uuid {
        let bytes = (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// Generates command envelopes.
pub struct Generator {
    rng: Rng,
    clock: DateTime<Utc>,
    queue: std::collections::VecDeque<CommandEnvelope>,
    scripts: Vec<std::collections::VecDeque<CommandEnvelope>>,
    market: usize,
    provider: Option<(Uuid, usize)>,
    emitted: Vec<CommandEnvelope>,
    /// Months of revenue recorded per reseller (12 in the default profile).
    revenue_months: i32,
    /// Percent of resellers taken through the direct-bill path.
    direct_bill_percent: u64,
}

/// Scripts interleaved at once (streams in flight).
const INTERLEAVED_SCRIPTS: usize = 16;

impl Generator {
    /// Many partners, few events each (about 13 events per partner): the shape of the query
    /// benchmark's store (100,000 partners in about 1.3 million events).
    pub fn lean(seed: u64) -> Generator {
        let mut generator = Generator::new(seed);
        generator.revenue_months = 1;
        generator.direct_bill_percent = 0;
        generator
    }

    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            clock: Utc
                .with_ymd_and_hms(2025, 1, 6, 9, 0, 0)
                .single()
                .unwrap_or_default(),
            queue: Default::default(),
            scripts: Vec::new(),
            market: 0,
            provider: None,
            emitted: Vec::new(),
            revenue_months: 12,
            direct_bill_percent: 20,
        }
    }

    fn envelope(&mut self, actor: Actor, command: Command) -> CommandEnvelope {
        self.clock += Duration::seconds(1);
        CommandEnvelope {
            command_id: self.rng.uuid(),
            issued_at: self.clock,
            actor,
            correlation_id: None,
            command,
        }
    }

    fn country(&mut self) -> Country {
        let market = MARKETS[self.market];
        let code = market[self.rng.below(market.len() as u64) as usize];
        code.parse().unwrap_or(Country(*b"DE"))
    }

    /// The enrollment of a partner up to a signed MPA.
    fn onboarding(&mut self, partner_id: Uuid, country: Country) -> Vec<CommandEnvelope> {
        let admin = Actor::partner(partner_id, "global_admin");
        let tenant_id = self.rng.uuid();
        let n = self.rng.next_u64() % 1_000_000;
        let mut out = vec![
            self.envelope(
                admin.clone(),
                Command::EnrollPartner(c::EnrollPartner {
                    partner_id,
                    legal_name: format!("Partner {n} GmbH"),
                    country,
                    tenant_id,
                    primary_contact_email: Email(format!("contact{n}@partner{n}.example")),
                }),
            ),
            self.envelope(
                Actor::operator(),
                Command::VerifyPartner(c::VerifyPartner {
                    partner_id,
                    outcome: VerificationOutcome::Approved,
                    reason: None,
                }),
            ),
        ];
        let mpn_id = format!("{}", 1_000_000 + self.rng.below(8_000_000_000));
        out.push(self.envelope(
            admin.clone(),
            Command::AssociateMpnId(c::AssociateMpnId {
                partner_id,
                mpn_id,
                mpn_country: country,
            }),
        ));
        if self.rng.chance(5) {
            // An admin agent tries to sign: signer_not_global_admin.
            out.push(self.envelope(
                Actor::partner(partner_id, "admin_agent"),
                Command::SignMPA(c::SignMPA {
                    partner_id,
                    signer_email: Email(format!("agent{n}@partner{n}.example")),
                    agreement_version: "2026-01".into(),
                }),
            ));
        }
        out.push(self.envelope(
            admin,
            Command::SignMPA(c::SignMPA {
                partner_id,
                signer_email: Email(format!("admin{n}@partner{n}.example")),
                agreement_version: "2026-01".into(),
            }),
        ));
        out
    }

    fn provider_script(&mut self) -> Vec<CommandEnvelope> {
        let partner_id = self.rng.uuid();
        let country = self.country();
        let mut out = self.onboarding(partner_id, country);
        out.push(self.envelope(
            Actor::operator(),
            Command::AuthorizeIndirectProvider(c::AuthorizeIndirectProvider { partner_id }),
        ));
        self.provider = Some((partner_id, 0));
        out
    }

    fn reseller_script(
        &mut self,
        provider_id: Uuid,
    ) -> std::collections::VecDeque<CommandEnvelope> {
        let reseller_id = self.rng.uuid();
        let country = self.country();
        let mut out = self.onboarding(reseller_id, country);
        let admin = Actor::partner(reseller_id, "admin_agent");
        let provider_admin = Actor::partner(provider_id, "admin_agent");
        let invitation_id = self.rng.uuid();
        out.push(self.envelope(
            provider_admin,
            Command::InviteReseller(c::InviteReseller {
                invitation_id,
                provider_id,
                reseller_id,
            }),
        ));
        out.push(self.envelope(
            admin.clone(),
            Command::AcceptInvitation(c::AcceptInvitation {
                invitation_id,
                reseller_id,
            }),
        ));
        for _ in 0..1 + self.rng.below(2) {
            let customer_id = self.rng.uuid();
            let (number, tenant_id) = (self.rng.below(1_000_000), self.rng.uuid());
            out.push(self.envelope(
                admin.clone(),
                Command::RegisterCustomer(c::RegisterCustomer {
                    customer_id,
                    company_name: format!("Customer {number}"),
                    country,
                    tenant_id,
                    affiliated_partner_id: None,
                }),
            ));
            let signer_email = Email(format!("it{number}@customer{number}.example"));
            out.push(self.envelope(
                Actor::customer(customer_id),
                Command::AcceptCustomerAgreement(c::AcceptCustomerAgreement {
                    customer_id,
                    signer_email,
                    agreement_version: "MCA-2026".into(),
                }),
            ));
            let invitation_id = self.rng.uuid();
            out.push(self.envelope(
                admin.clone(),
                Command::InviteCustomer(c::InviteCustomer {
                    invitation_id,
                    reseller_id,
                    provider_id: Some(provider_id),
                    customer_id,
                }),
            ));
            out.push(self.envelope(
                Actor::customer(customer_id),
                Command::AcceptCustomerInvitation(c::AcceptCustomerInvitation {
                    invitation_id,
                    customer_id,
                }),
            ));
        }
        let start = Month::of_date(self.clock.date_naive()).index() - 12;
        let big = self.rng.chance(self.direct_bill_percent);
        for m in 12 - self.revenue_months..12 {
            let month = Month {
                year: ((start + m) / 12) as u16,
                month: ((start + m) % 12 + 1) as u8,
            };
            let cents = if big {
                3_000_000 + self.rng.below(500_000) as i64
            } else {
                50_000 + self.rng.below(2_000_000) as i64
            };
            out.push(self.envelope(
                Actor::operator(),
                Command::RecordRevenue(c::RecordRevenue {
                    partner_id: reseller_id,
                    month,
                    category: RevenueCategory::Cloud,
                    amount_usd: UsdAmount::from_cents(cents),
                }),
            ));
        }
        if self.rng.chance(3) {
            // An adjustment larger than the month: negative_revenue_total.
            let month = Month {
                year: (start / 12) as u16,
                month: (start % 12 + 1) as u8,
            };
            out.push(self.envelope(
                Actor::operator(),
                Command::RecordRevenue(c::RecordRevenue {
                    partner_id: reseller_id,
                    month,
                    category: RevenueCategory::PerpetualSoftware,
                    amount_usd: UsdAmount::from_cents(-100),
                }),
            ));
        }
        let global = Actor::partner(reseller_id, "global_admin");
        if big {
            out.push(self.envelope(
                global.clone(),
                Command::PurchaseSupportPlan(c::PurchaseSupportPlan {
                    partner_id: reseller_id,
                    plan: SupportPlan::Advanced,
                }),
            ));
            out.push(self.envelope(
                global.clone(),
                Command::AttestInfrastructure(c::AttestInfrastructure {
                    partner_id: reseller_id,
                    billing: true,
                    provisioning: true,
                }),
            ));
            out.push(self.envelope(
                global.clone(),
                Command::ApplyForDirectBill(c::ApplyForDirectBill {
                    partner_id: reseller_id,
                }),
            ));
            out.push(self.envelope(
                Actor::operator(),
                Command::RecordCreditCheck(c::RecordCreditCheck {
                    partner_id: reseller_id,
                    outcome: CreditOutcome::Approved,
                    credit_limit_usd: Some(UsdAmount::from_cents(5_000_000)),
                }),
            ));
            out.push(self.envelope(
                global,
                Command::AcceptDirectBillTerms(c::AcceptDirectBillTerms {
                    partner_id: reseller_id,
                }),
            ));
        } else if self.rng.chance(10) {
            // Applies without meeting the requirements: direct_bill_requirements_unmet.
            out.push(self.envelope(
                global,
                Command::ApplyForDirectBill(c::ApplyForDirectBill {
                    partner_id: reseller_id,
                }),
            ));
        }
        out.into()
    }

    fn refill(&mut self) {
        while self.scripts.len() < INTERLEAVED_SCRIPTS {
            let provider = match self.provider {
                Some((id, count)) if count < RESELLERS_PER_PROVIDER => id,
                _ => {
                    self.market = (self.market + 1) % MARKETS.len();
                    let script = self.provider_script();
                    self.queue.extend(script);
                    return;
                }
            };
            if let Some((_, count)) = &mut self.provider {
                *count += 1;
            }
            let script = self.reseller_script(provider);
            self.scripts.push(script);
        }
    }
}

impl Iterator for Generator {
    type Item = CommandEnvelope;

    fn next(&mut self) -> Option<CommandEnvelope> {
        loop {
            if let Some(next) = self.queue.pop_front() {
                return Some(self.remember(next));
            }
            if self.rng.chance(1) && !self.emitted.is_empty() {
                // A client retry: the same command again (a duplicate outcome).
                let index = self.rng.below(self.emitted.len() as u64) as usize;
                return Some(self.emitted[index].clone());
            }
            self.refill();
            if !self.queue.is_empty() {
                continue;
            }
            let index = self.rng.below(self.scripts.len() as u64) as usize;
            let script = &mut self.scripts[index];
            match script.pop_front() {
                Some(next) => {
                    if script.is_empty() {
                        self.scripts.swap_remove(index);
                    }
                    return Some(self.remember(next));
                }
                None => {
                    self.scripts.swap_remove(index);
                }
            }
        }
    }
}

impl Generator {
    fn remember(&mut self, envelope: CommandEnvelope) -> CommandEnvelope {
        if self.emitted.len() < 4096 {
            self.emitted.push(envelope.clone());
        } else {
            let slot = self.rng.below(4096) as usize;
            self.emitted[slot] = envelope.clone();
        }
        envelope
    }
}

/// `commands` generated command lines of the full profile, one JSON line each (what
/// `csp-ledger-tools generate --commands N --seed S` prints).
pub fn generated_jsonl(commands: usize, seed: u64) -> String {
    let mut out = String::new();
    for envelope in Generator::new(seed).take(commands) {
        out.push_str(&envelope.to_json());
        out.push('\n');
    }
    out
}
