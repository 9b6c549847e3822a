//! A read of a paged list: which page to ask for next, the items kept (with
//! a read tool's filter), and what the model is told — including when the
//! list was cut.

use serde_json::{Value, json};

use crate::character::api::Paging;
use crate::engine::turn::MAX_TOOL_RESULT_CHARS;

/// Most pages one read follows.
pub const MAX_READ_PAGES: u32 = 5;

/// A list read page by page.
#[derive(Debug, Clone, PartialEq)]
pub struct PagedRead<'a> {
    paging: &'a Paging,
    /// Keep only items whose array field of this name is empty.
    only_without: Option<&'a str>,
    items: Vec<Value>,
    /// The characters the kept items take.
    size: usize,
    /// What the API says the list holds.
    total: Option<u64>,
    pages: Option<u32>,
    next: u32,
    cut: bool,
}

impl<'a> PagedRead<'a> {
    /// A read that has asked for nothing yet.
    pub fn new(paging: &'a Paging, only_without: Option<&'a str>) -> Self {
        Self {
            paging,
            only_without,
            items: Vec::new(),
            size: 0,
            total: None,
            pages: None,
            next: 0,
            cut: false,
        }
    }

    /// The query of the next page (`query` plus the page and its size),
    /// `None` when the read is done.
    pub fn next_query(&self, query: &[(String, String)]) -> Option<Vec<(String, String)>> {
        let done = self.cut || self.pages.is_some_and(|pages| self.next >= pages);
        if done {
            return None;
        }
        let mut query = query.to_vec();
        query.push((self.paging.page.clone(), self.next.to_string()));
        query.push((self.paging.size.clone(), self.paging.max_size.to_string()));
        Some(query)
    }

    /// Takes one page: its body (a JSON array) and the counts its headers
    /// gave. Past [`MAX_READ_PAGES`], or past what the model can be told,
    /// the read is cut.
    pub fn take(
        &mut self,
        body: &str,
        page_count: Option<u32>,
        result_count: Option<u64>,
    ) -> Result<(), String> {
        let Ok(Value::Array(page)) = serde_json::from_str::<Value>(body) else {
            return Err("the list's answer is not a JSON array".to_owned());
        };
        let received = page.len();
        // Without a page count, the page read is the last.
        self.pages = Some(page_count.unwrap_or(self.next + 1));
        self.total = result_count.or(self.total);
        for item in page {
            if let Some(field) = self.only_without
                && item[field].as_array().is_some_and(|a| !a.is_empty())
            {
                continue;
            }
            let size = item.to_string().len() + 1;
            if self.size + size > MAX_TOOL_RESULT_CHARS {
                self.cut = true;
                return Ok(());
            }
            self.size += size;
            self.items.push(item);
        }
        self.next += 1;
        let more = self.pages.is_some_and(|pages| self.next < pages);
        if more && (self.next >= MAX_READ_PAGES || received == 0) {
            self.cut = true;
        }
        Ok(())
    }

    /// What the model is told: the items, how many the list holds, and
    /// whether it was cut (then how to narrow the read).
    pub fn result(&self) -> String {
        let mut result = json!({
            "status": 200,
            "items": self.items,
            "count": self.items.len(),
        });
        if let Some(total) = self.total {
            result["total"] = json!(total);
        }
        if self.cut {
            result["truncated"] = json!(true);
            result["note"] = json!(format!(
                "Only the first {} items are shown; the list holds more. Narrow the read \
                 (a shorter date range, a filter) to see the rest.",
                self.items.len()
            ));
        }
        if self.only_without.is_some() {
            result["filtered"] = json!("only items without attachments");
        }
        result.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paging() -> Paging {
        Paging {
            page: "page".into(),
            size: "pageSize".into(),
            max_size: 2,
            page_count_header: "Fiken-Api-Page-Count".into(),
            result_count_header: "Fiken-Api-Result-Count".into(),
        }
    }

    #[test]
    fn follows_the_pages_the_api_reports_and_asks_for_the_largest() {
        let paging = paging();
        let mut read = PagedRead::new(&paging, None);
        let base = [("dateGe".to_owned(), "2026-01-01".to_owned())];
        assert_eq!(
            read.next_query(&base).unwrap(),
            [
                ("dateGe".to_owned(), "2026-01-01".to_owned()),
                ("page".to_owned(), "0".to_owned()),
                ("pageSize".to_owned(), "2".to_owned())
            ]
        );
        read.take(r#"[{"id":1},{"id":2}]"#, Some(2), Some(3))
            .unwrap();
        assert_eq!(read.next_query(&base).unwrap()[1].1, "1");
        read.take(r#"[{"id":3}]"#, Some(2), Some(3)).unwrap();
        assert_eq!(read.next_query(&base), None);
        let result: Value = serde_json::from_str(&read.result()).unwrap();
        assert_eq!(result["count"], 3);
        assert_eq!(result["total"], 3);
        assert!(result.get("truncated").is_none());
    }

    #[test]
    fn a_list_longer_than_the_read_is_cut_and_the_model_told() {
        let paging = paging();
        let mut read = PagedRead::new(&paging, None);
        for _ in 0..MAX_READ_PAGES {
            let query = read.next_query(&[]).expect("another page");
            assert!(!query.is_empty());
            read.take(r#"[{"id":1},{"id":2}]"#, Some(50), Some(100))
                .unwrap();
        }
        assert_eq!(read.next_query(&[]), None);
        let result: Value = serde_json::from_str(&read.result()).unwrap();
        assert_eq!(result["count"], 10);
        assert_eq!(result["total"], 100);
        assert_eq!(result["truncated"], true);
        assert!(result["note"].as_str().unwrap().contains("Narrow the read"));
        // Items past what the model can be told cut it too.
        let mut read = PagedRead::new(&paging, None);
        let big = format!(r#"[{{"text":"{}"}}]"#, "x".repeat(MAX_TOOL_RESULT_CHARS));
        read.take(&big, Some(1), Some(1)).unwrap();
        let result: Value = serde_json::from_str(&read.result()).unwrap();
        assert_eq!(
            (result["count"].as_u64(), result["truncated"].as_bool()),
            (Some(0), Some(true))
        );
    }

    #[test]
    fn keeps_only_items_without_the_named_attachments() {
        let paging = paging();
        let mut read = PagedRead::new(&paging, Some("purchaseAttachments"));
        read.take(
            r#"[{"purchaseId":1,"purchaseAttachments":[]},{"purchaseId":2,"purchaseAttachments":[{"identifier":"9"}]},{"purchaseId":3}]"#,
            Some(1),
            Some(3),
        )
        .unwrap();
        let result: Value = serde_json::from_str(&read.result()).unwrap();
        let ids: Vec<_> = result["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["purchaseId"].clone())
            .collect();
        assert_eq!(ids, [json!(1), json!(3)]);
        assert!(read.take("{}", None, None).is_err());
    }
}
