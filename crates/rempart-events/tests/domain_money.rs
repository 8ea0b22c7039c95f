//! Money: the rounding rule, discounts in integer arithmetic, and overflow
//! as an error.

use proptest::prelude::*;
use rempart_events::money::{
    Cents, Discount, MoneyError, RateTotal, VatBreakdown, VatRate, ticket_totals,
};

#[test]
fn vat_is_extracted_per_rate_with_half_away_from_zero() {
    // 1.00 € TTC at 20 %: 16.666… cents → 17; HT 83.
    let line = RateTotal::from_ttc(VatRate::NORMAL, Cents::new(100)).unwrap();
    assert_eq!(
        (line.ht, line.tva, line.ttc),
        (Cents::new(83), Cents::new(17), Cents::new(100))
    );
    // 0.21 € at 10 %: 1.909… → 2. 1.10 € at 10 %: exactly 10 cents.
    assert_eq!(
        VatRate::INTERMEDIATE.vat_in(Cents::new(21)).unwrap(),
        Cents::new(2)
    );
    assert_eq!(
        VatRate::INTERMEDIATE.vat_in(Cents::new(110)).unwrap(),
        Cents::new(10)
    );
    // 2.1 % of 102.10 €: exactly 2.10 €.
    assert_eq!(
        VatRate::SUPER_REDUCED.vat_in(Cents::new(10_210)).unwrap(),
        Cents::new(210)
    );
    // A half cent goes away from zero, both ways: 3 cents TTC at 20 %
    // hold exactly 0.5 cent of VAT: 1 cent, and a refund of 3 cents −1.
    assert_eq!(
        VatRate::NORMAL.vat_in(Cents::new(3)).unwrap(),
        Cents::new(1)
    );
    assert_eq!(
        VatRate::NORMAL.vat_in(Cents::new(-3)).unwrap(),
        Cents::new(-1)
    );
}

#[test]
fn vat_is_rounded_on_the_rate_total_not_per_line() {
    // Three 0.10 € articles at 20 %: per line 1.666… → 2 cents each (6),
    // on the total 0.30 € → 5 cents. The rule is per rate total.
    let lines = [(VatRate::NORMAL, Cents::new(10)); 3];
    let t = ticket_totals(&lines, &[]).unwrap();
    assert_eq!(t.tva().unwrap(), Cents::new(5));
    assert_eq!(t.ttc(), Cents::new(30));
}

#[test]
fn percentage_discount_is_integer_and_rounded() {
    // The seed: total * valeur / 100 in floats. 10 % of 9.95 € = 99.5 cents → 1.00 €.
    let lines = [(VatRate::NORMAL, Cents::new(995))];
    let t = ticket_totals(&lines, &[Discount::Percent { basis_points: 1000 }]).unwrap();
    assert_eq!(t.discount, Cents::new(100));
    assert_eq!(t.ttc(), Cents::new(895));
    // 33.33 % of 0.10 € = 3.333 cents → 3.
    let lines = [(VatRate::NORMAL, Cents::new(10))];
    let t = ticket_totals(&lines, &[Discount::Percent { basis_points: 3333 }]).unwrap();
    assert_eq!(t.discount, Cents::new(3));
    // Two discounts: the second applies to what is left after the first.
    let lines = [(VatRate::NORMAL, Cents::new(10_000))];
    let both = [
        Discount::Percent { basis_points: 1000 },
        Discount::Amount {
            cents: Cents::new(500),
        },
        Discount::Percent { basis_points: 1000 },
    ];
    let t = ticket_totals(&lines, &both).unwrap();
    // 100 → 90 → 85 → 76.50
    assert_eq!(t.ttc(), Cents::new(7_650));
}

#[test]
fn discount_is_shared_across_rates_to_the_cent() {
    // 1 € off 3 € + 2 € at two rates: 0.60 € and 0.40 €.
    let lines = [
        (VatRate::REDUCED, Cents::new(300)),
        (VatRate::NORMAL, Cents::new(200)),
    ];
    let t = ticket_totals(
        &lines,
        &[Discount::Amount {
            cents: Cents::new(100),
        }],
    )
    .unwrap();
    assert_eq!(
        t.breakdown.get(VatRate::REDUCED).unwrap().ttc,
        Cents::new(240)
    );
    assert_eq!(
        t.breakdown.get(VatRate::NORMAL).unwrap().ttc,
        Cents::new(160)
    );
    // 1 cent off two equal parts: it goes to the higher rate.
    let lines = [
        (VatRate::REDUCED, Cents::new(100)),
        (VatRate::NORMAL, Cents::new(100)),
    ];
    let t = ticket_totals(
        &lines,
        &[Discount::Amount {
            cents: Cents::new(1),
        }],
    )
    .unwrap();
    assert_eq!(
        t.breakdown.get(VatRate::REDUCED).unwrap().ttc,
        Cents::new(100)
    );
    assert_eq!(
        t.breakdown.get(VatRate::NORMAL).unwrap().ttc,
        Cents::new(99)
    );
}

#[test]
fn a_discount_skips_a_rate_with_more_taken_back_than_sold() {
    // A refund line at 5.5 % and a sale at 20 %: 10 % of the 6.00 € due
    // comes off the 20 % rate only, and the rates still add up to the total.
    let lines = [
        (VatRate::REDUCED, Cents::new(-4_00)),
        (VatRate::NORMAL, Cents::new(10_00)),
    ];
    let t = ticket_totals(&lines, &[Discount::Percent { basis_points: 1000 }]).unwrap();
    assert_eq!(t.discount, Cents::new(60));
    assert_eq!(
        t.breakdown.get(VatRate::REDUCED).unwrap().ttc,
        Cents::new(-4_00)
    );
    assert_eq!(
        t.breakdown.get(VatRate::NORMAL).unwrap().ttc,
        Cents::new(9_40)
    );
    assert_eq!(t.breakdown.total().unwrap().ttc, t.ttc());
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    let big = Cents::new(i64::MAX);
    assert!(matches!(
        big.checked_add(Cents::new(1)),
        Err(MoneyError::Overflow { .. })
    ));
    assert!(matches!(
        big.checked_mul(2),
        Err(MoneyError::Overflow { .. })
    ));
    let lines = [(VatRate::NORMAL, big), (VatRate::REDUCED, big)];
    assert!(ticket_totals(&lines, &[]).is_err());
    assert!(VatRate::from_basis_points(10_001).is_err());
    assert!(
        Discount::Percent {
            basis_points: 10_001
        }
        .amount_on(Cents::new(100))
        .is_err()
    );
}

#[test]
fn breakdown_reads_back_only_canonical_and_balanced() {
    let good =
        r#"[{"taux":550,"ht":95,"tva":5,"ttc":100},{"taux":2000,"ht":83,"tva":17,"ttc":100}]"#;
    let b: VatBreakdown = serde_json::from_str(good).unwrap();
    assert_eq!(serde_json::to_string(&b).unwrap(), good);
    let unsorted =
        r#"[{"taux":2000,"ht":83,"tva":17,"ttc":100},{"taux":550,"ht":95,"tva":5,"ttc":100}]"#;
    assert!(serde_json::from_str::<VatBreakdown>(unsorted).is_err());
    let unbalanced = r#"[{"taux":2000,"ht":83,"tva":18,"ttc":100}]"#;
    let err = serde_json::from_str::<VatBreakdown>(unbalanced).unwrap_err();
    assert!(err.to_string().contains("does not add up"), "{err}");
}

#[test]
fn discount_wire_names_say_the_unit() {
    let d: Discount =
        serde_json::from_str(r#"{"type":"POURCENTAGE","pointsDeBase":1250}"#).unwrap();
    assert_eq!(d, Discount::Percent { basis_points: 1250 });
    let d: Discount = serde_json::from_str(r#"{"type":"MONTANT","centimes":500}"#).unwrap();
    assert_eq!(
        d,
        Discount::Amount {
            cents: Cents::new(500)
        }
    );
}

fn rate() -> impl Strategy<Value = VatRate> {
    prop_oneof![
        Just(VatRate::NORMAL),
        Just(VatRate::INTERMEDIATE),
        Just(VatRate::REDUCED),
        Just(VatRate::SUPER_REDUCED),
        (0u32..=10_000).prop_map(|bp| VatRate::from_basis_points(bp).unwrap()),
    ]
}

fn discount() -> impl Strategy<Value = Discount> {
    prop_oneof![
        (0u32..=10_000).prop_map(|basis_points| Discount::Percent { basis_points }),
        (0i64..1_000_000).prop_map(|c| Discount::Amount {
            cents: Cents::new(c)
        }),
    ]
}

proptest! {
    #[test]
    fn breakdown_adds_up_to_the_ttc_exactly(
        lines in prop::collection::vec((rate(), 0i64..10_000_000), 0..30),
        discounts in prop::collection::vec(discount(), 0..4),
    ) {
        let lines: Vec<_> = lines.into_iter().map(|(r, c)| (r, Cents::new(c))).collect();
        let t = ticket_totals(&lines, &discounts).unwrap();
        let sum = t.breakdown.total().unwrap();
        prop_assert_eq!(sum.ttc, t.ttc());
        prop_assert_eq!(sum.ht.get() + sum.tva.get(), sum.ttc.get());
        for line in t.breakdown.lines() {
            prop_assert_eq!(line.ht.get() + line.tva.get(), line.ttc.get());
            prop_assert!(line.ttc >= Cents::ZERO, "a rate went negative: {line:?}");
        }
        let gross: i64 = lines.iter().map(|(_, c)| c.get()).sum();
        prop_assert_eq!(t.gross.get(), gross);
        prop_assert!(t.discount >= Cents::ZERO && t.discount <= t.gross);
    }

    #[test]
    fn vat_is_the_nearest_cent(ttc in -1_000_000_000i64..1_000_000_000, r in rate()) {
        let vat = r.vat_in(Cents::new(ttc)).unwrap().get();
        // |vat − ttc·t/(1+t)| ≤ 1/2, checked in exact integers.
        let (n, d) = (i128::from(ttc) * i128::from(r.basis_points()), 10_000 + i128::from(r.basis_points()));
        prop_assert!((i128::from(vat) * d - n).abs() * 2 <= d);
    }

    #[test]
    fn no_input_panics(
        lines in prop::collection::vec((rate(), any::<i64>()), 0..6),
        discounts in prop::collection::vec(
            prop_oneof![
                any::<u32>().prop_map(|basis_points| Discount::Percent { basis_points }),
                any::<i64>().prop_map(|c| Discount::Amount { cents: Cents::new(c) }),
            ],
            0..4,
        ),
    ) {
        let lines: Vec<_> = lines.into_iter().map(|(r, c)| (r, Cents::new(c))).collect();
        // Ok or an error, never a panic; when Ok the figures add up.
        if let Ok(t) = ticket_totals(&lines, &discounts) {
            for line in t.breakdown.lines() {
                prop_assert_eq!(line.ht.get().checked_add(line.tva.get()), Some(line.ttc.get()));
            }
            prop_assert!(t.discount >= Cents::ZERO && t.discount <= t.gross.max(Cents::ZERO));
            if let Ok(sum) = t.breakdown.total() {
                prop_assert_eq!(sum.ttc, t.ttc());
            }
        }
    }
}
