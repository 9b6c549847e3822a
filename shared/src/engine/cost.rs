//! What recorded usage cost: a price table per model and per Accounting API
//! call, applied to token counts.
//!
//! Money is always an integer number of micro-units of the table's currency
//! (1 USD = 1 000 000 micros), never a float. Each line is rounded once, half
//! up, to whole micros; intermediate products are `u128` so they cannot
//! overflow, and sums saturate at `u64::MAX` instead of wrapping.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Micro-units in one unit of a currency.
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// Tokens a per-million price refers to.
const TOKENS_PER_PRICE: u128 = 1_000_000;

/// Prices of the models and of Accounting API calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PriceTable {
    /// ISO 4217 code of every price in the table (default `USD`).
    pub currency: String,
    /// Prices by model name, exactly as the model is recorded in usage.
    pub models: BTreeMap<String, ModelPrice>,
    /// Price of one Accounting API call, in micros (default 0).
    pub tool_call_micros: u64,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            currency: "USD".to_owned(),
            models: BTreeMap::new(),
            tool_call_micros: 0,
        }
    }
}

/// Price of one model, in micros per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Price of one million prompt (input) tokens, in micros.
    pub input_per_million_micros: u64,
    /// Price of one million completion (output) tokens, in micros.
    pub output_per_million_micros: u64,
}

impl ModelPrice {
    /// The cost of these token counts in micros, rounded half up.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        // Each product fits in u128; only their sum can overflow (and then
        // the result is far above u64::MAX anyway).
        let scaled = (u128::from(input_tokens) * u128::from(self.input_per_million_micros))
            .saturating_add(u128::from(output_tokens) * u128::from(self.output_per_million_micros));
        let rounded = scaled.saturating_add(TOKENS_PER_PRICE / 2) / TOKENS_PER_PRICE;
        u64::try_from(rounded).unwrap_or(u64::MAX)
    }
}

/// Recorded LLM usage of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLine {
    /// The model name as recorded.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Number of LLM calls.
    pub calls: u64,
}

/// The cost of usage, per model and in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostReport {
    /// Currency of every amount in the report.
    pub currency: String,
    /// One line per model, sorted by model name.
    pub lines: Vec<CostLine>,
    /// Accounting API calls.
    pub tool_calls: u64,
    /// What the Accounting API calls cost, in micros.
    pub tool_cost_micros: u64,
    /// Priced model lines plus Accounting API calls, in micros. Unpriced
    /// models are left out (see `unpriced_models`).
    pub total_micros: u64,
    /// Models with usage but no price in the table, sorted.
    pub unpriced_models: Vec<String>,
}

/// The usage and cost of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostLine {
    /// The model name.
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Number of LLM calls.
    pub calls: u64,
    /// The cost in micros; `None` when the model is not in the price table.
    pub cost_micros: Option<u64>,
}

impl PriceTable {
    /// Prices `usage` and `tool_calls` Accounting API calls. Usage lines of
    /// the same model are added up into one report line.
    pub fn report(&self, usage: &[UsageLine], tool_calls: u64) -> CostReport {
        let mut by_model: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for line in usage {
            let sums = by_model.entry(line.model.as_str()).or_default();
            sums.0 = sums.0.saturating_add(line.input_tokens);
            sums.1 = sums.1.saturating_add(line.output_tokens);
            sums.2 = sums.2.saturating_add(line.calls);
        }
        let lines: Vec<CostLine> = by_model
            .into_iter()
            .map(|(model, (input_tokens, output_tokens, calls))| CostLine {
                model: model.to_owned(),
                input_tokens,
                output_tokens,
                calls,
                cost_micros: self
                    .models
                    .get(model)
                    .map(|price| price.cost_micros(input_tokens, output_tokens)),
            })
            .collect();
        let tool_cost_micros = tool_calls.saturating_mul(self.tool_call_micros);
        let total_micros = lines
            .iter()
            .filter_map(|l| l.cost_micros)
            .fold(tool_cost_micros, u64::saturating_add);
        let unpriced_models = lines
            .iter()
            .filter(|l| l.cost_micros.is_none())
            .map(|l| l.model.clone())
            .collect();
        CostReport {
            currency: self.currency.clone(),
            lines,
            tool_calls,
            tool_cost_micros,
            total_micros,
            unpriced_models,
        }
    }
}

impl CostReport {
    /// A short plain-text summary, one fact a line, for a person or a model.
    pub fn summary(&self) -> String {
        let money = |micros| format_money(micros, &self.currency);
        let mut out = format!("Total spend: {}.", money(self.total_micros));
        if self.lines.is_empty() {
            out.push_str("\nNo LLM usage recorded.");
        }
        for line in &self.lines {
            let cost = line
                .cost_micros
                .map_or_else(|| "price unknown".to_owned(), money);
            out.push_str(&format!(
                "\n- {}: {} calls, {} input and {} output tokens, {cost}",
                line.model, line.calls, line.input_tokens, line.output_tokens
            ));
        }
        out.push_str(&format!(
            "\n- Accounting API: {} calls, {}",
            self.tool_calls,
            money(self.tool_cost_micros)
        ));
        if !self.unpriced_models.is_empty() {
            out.push_str(&format!(
                "\nNot in the price table, so left out of the total: {}.",
                self.unpriced_models.join(", ")
            ));
        }
        out
    }
}

/// Formats micros as `<currency> <amount>`: two decimals when the amount is
/// whole cents (`USD 0.42`, `USD 3.00`), otherwise up to six decimals with
/// trailing zeros trimmed (`USD 0.0015`, `USD 1.234567`). No thousands
/// separators; without a currency only the amount is written.
pub fn format_money(micros: u64, currency: &str) -> String {
    let whole = micros / MICROS_PER_UNIT;
    let fraction = format!("{:06}", micros % MICROS_PER_UNIT);
    let significant = fraction.trim_end_matches('0').len().max(2);
    let amount = format!("{whole}.{}", &fraction[..significant]);
    if currency.is_empty() {
        amount
    } else {
        format!("{currency} {amount}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        PriceTable {
            currency: "USD".into(),
            models: BTreeMap::from([
                (
                    "gpt-4o-mini".to_owned(),
                    ModelPrice {
                        input_per_million_micros: 150_000,
                        output_per_million_micros: 600_000,
                    },
                ),
                (
                    "gpt-4o".to_owned(),
                    ModelPrice {
                        input_per_million_micros: 2_500_000,
                        output_per_million_micros: 10_000_000,
                    },
                ),
            ]),
            tool_call_micros: 1_000,
        }
    }

    fn usage(model: &str, input_tokens: u64, output_tokens: u64, calls: u64) -> UsageLine {
        UsageLine {
            model: model.into(),
            input_tokens,
            output_tokens,
            calls,
        }
    }

    #[test]
    fn line_cost_is_rounded_half_up_to_whole_micros() {
        let mini = table().models["gpt-4o-mini"];
        // 1 234 567 × 0.15 = 185 185.05 micros.
        assert_eq!(mini.cost_micros(1_234_567, 0), 185_185);
        // 10 × 0.15 = 1.5 → 2 (half up); 3 × 0.15 = 0.45 → 0; 1 × 0.15 → 0.
        assert_eq!(mini.cost_micros(10, 0), 2);
        assert_eq!(mini.cost_micros(3, 0), 0);
        assert_eq!(mini.cost_micros(1, 0), 0);
        // Input and output are added before rounding: 0.3 + 0.4 = 0.7 → 1
        // (rounding each first would give 0).
        let split = ModelPrice {
            input_per_million_micros: 300_000,
            output_per_million_micros: 400_000,
        };
        assert_eq!(split.cost_micros(1, 1), 1);
        // 1 234 567 × 0.15 + 7 654 × 0.6 = 185 185.05 + 4 592.4 = 189 777.45.
        assert_eq!(mini.cost_micros(1_234_567, 7_654), 189_777);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let price = ModelPrice {
            input_per_million_micros: u64::MAX,
            output_per_million_micros: u64::MAX,
        };
        assert_eq!(price.cost_micros(u64::MAX, u64::MAX), u64::MAX);
        let exact = ModelPrice {
            input_per_million_micros: 1_000_000,
            output_per_million_micros: 0,
        };
        assert_eq!(exact.cost_micros(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn report_sums_models_tools_and_names_unpriced_models() {
        let report = table().report(
            &[
                usage("gpt-4o-mini", 1_000_000, 100_000, 10),
                usage("mystery", 500, 50, 2),
                usage("gpt-4o", 10_000, 1_000, 1),
                usage("gpt-4o-mini", 234_567, 0, 3),
            ],
            42,
        );
        assert_eq!(report.currency, "USD");
        let models: Vec<_> = report.lines.iter().map(|l| l.model.as_str()).collect();
        assert_eq!(models, ["gpt-4o", "gpt-4o-mini", "mystery"]);
        // gpt-4o: 10 000 × 2.5 + 1 000 × 10 = 35 000.
        assert_eq!(report.lines[0].cost_micros, Some(35_000));
        // gpt-4o-mini: 1 234 567 × 0.15 + 100 000 × 0.6 = 245 185.05.
        assert_eq!(
            report.lines[1],
            CostLine {
                model: "gpt-4o-mini".into(),
                input_tokens: 1_234_567,
                output_tokens: 100_000,
                calls: 13,
                cost_micros: Some(245_185),
            }
        );
        assert_eq!(report.lines[2].cost_micros, None);
        assert_eq!(report.tool_calls, 42);
        assert_eq!(report.tool_cost_micros, 42_000);
        assert_eq!(report.total_micros, 35_000 + 245_185 + 42_000);
        assert_eq!(report.unpriced_models, ["mystery"]);
    }

    #[test]
    fn empty_usage_costs_nothing() {
        let report = PriceTable::default().report(&[], 0);
        assert_eq!(report.currency, "USD");
        assert_eq!(report.total_micros, 0);
        assert!(report.lines.is_empty() && report.unpriced_models.is_empty());
        assert!(report.summary().contains("No LLM usage"));
    }

    #[test]
    fn price_table_reads_from_toml_with_defaults() {
        let table: PriceTable = toml::from_str(
            "[models.gpt-4o-mini]\ninput_per_million_micros = 150000\noutput_per_million_micros = 600000",
        )
        .unwrap();
        assert_eq!(table.currency, "USD");
        assert_eq!(table.tool_call_micros, 0);
        assert_eq!(
            table.models["gpt-4o-mini"].output_per_million_micros,
            600_000
        );
        assert!(toml::from_str::<PriceTable>("curency = \"EUR\"").is_err());
    }

    #[test]
    fn money_shows_cents_or_needed_micros() {
        let cases = [
            (0, "USD 0.00"),
            (420_000, "USD 0.42"),
            (3_000_000, "USD 3.00"),
            (1_500_000, "USD 1.50"),
            (1_500, "USD 0.0015"),
            (1_234_567, "USD 1.234567"),
            (185_185, "USD 0.185185"),
            (10_000, "USD 0.01"),
            (1, "USD 0.000001"),
            (12_345_678_900_000, "USD 12345678.90"),
        ];
        for (micros, expected) in cases {
            assert_eq!(format_money(micros, "USD"), expected);
        }
        assert_eq!(format_money(1_230_000, ""), "1.23");
    }

    #[test]
    fn summary_lists_lines_tools_and_unpriced_models() {
        let report = table().report(
            &[
                usage("gpt-4o-mini", 1_000_000, 0, 4),
                usage("mystery", 1, 1, 1),
            ],
            3,
        );
        let text = report.summary();
        assert!(text.starts_with("Total spend: USD 0.153."), "{text}");
        assert!(
            text.contains("- gpt-4o-mini: 4 calls, 1000000 input and 0 output tokens, USD 0.15"),
            "{text}"
        );
        assert!(text.contains("- mystery: 1 calls, 1 input and 1 output tokens, price unknown"));
        assert!(
            text.contains("- Accounting API: 3 calls, USD 0.003"),
            "{text}"
        );
        assert!(text.contains("left out of the total: mystery."), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["total_micros"], 153_000);
        assert_eq!(json["lines"][1]["cost_micros"], serde_json::Value::Null);
    }
}
