//! OST's list parameters and pages (`GET /users`, `GET /users-kyc`).
//!
//! `page_number` (a positive integer, default 1), `limit` (1–100, default 10), `order`
//! (`desc`, the default, or `asc`, by creation) and `filters` (an object; a blank value means
//! no filter). Every bad parameter is reported at once. The answer's `meta` has `total` (the
//! filtered count) and `next_page_payload`: the parameters of the next page — `page_number`,
//! `filters`, `order`, `limit` — or `{}` on the last page, so a client can pass it straight
//! back.

use serde_json::{json, Map, Value};

use crate::envelope::ErrorData;

pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 100;
/// The parameters a list endpoint takes.
pub const LIST_PARAMETERS: [&str; 4] = ["filters", "page_number", "order", "limit"];

/// Newest first (OST's default) or oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Desc,
    Asc,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }
}

/// What a filter check says about one `filters[name]=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterVerdict {
    Accept,
    Refuse(String),
}

/// A parsed list request.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub page_number: u64,
    pub limit: u64,
    pub order: Order,
    /// The filters in force (non-blank, each accepted by the endpoint).
    pub filters: Map<String, Value>,
}

/// Read the list parameters; bad ones are added to `errors`. `check` judges each filter.
pub fn parse(
    params: &Map<String, Value>,
    check: impl Fn(&str, &str) -> FilterVerdict,
    errors: &mut Vec<ErrorData>,
) -> ListQuery {
    let mut number = |name: &str, default: u64, max: u64| match params.get(name) {
        None => default,
        Some(Value::String(s)) if s.trim().is_empty() => default,
        Some(Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                errors.push(ErrorData::new(
                    name,
                    format!("must be an integer from 1 to {max}"),
                ));
                default
            }
        },
        Some(_) => {
            errors.push(ErrorData::new(name, "must be an integer"));
            default
        }
    };
    let page_number = number("page_number", 1, u64::from(u32::MAX));
    let limit = number("limit", DEFAULT_LIMIT, MAX_LIMIT);
    let order = match params.get("order") {
        None => Some(Order::Desc),
        Some(Value::String(s)) => match s.trim() {
            "" | "desc" => Some(Order::Desc),
            "asc" => Some(Order::Asc),
            _ => None,
        },
        Some(_) => None,
    }
    .unwrap_or_else(|| {
        errors.push(ErrorData::new(
            "order",
            "must be `desc` (the default) or `asc`",
        ));
        Order::Desc
    });
    let filters = parse_filters(params.get("filters"), check, errors);
    ListQuery {
        page_number,
        limit,
        order,
        filters,
    }
}

fn parse_filters(
    raw: Option<&Value>,
    check: impl Fn(&str, &str) -> FilterVerdict,
    errors: &mut Vec<ErrorData>,
) -> Map<String, Value> {
    let mut filters = Map::new();
    let given = match raw {
        None => return filters,
        Some(Value::String(s)) if s.trim().is_empty() => return filters,
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.push(ErrorData::new("filters", "must be an object of filters"));
            return filters;
        }
    };
    for (name, value) in given {
        let parameter = format!("filters[{name}]");
        let Value::String(text) = value else {
            errors.push(ErrorData::new(parameter, "must be a single value"));
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match check(name, text) {
            FilterVerdict::Accept => {
                filters.insert(name.clone(), Value::String(text.to_owned()));
            }
            FilterVerdict::Refuse(msg) => errors.push(ErrorData::new(parameter, msg)),
        }
    }
    filters
}

impl ListQuery {
    /// The page of `items` (given oldest first) this query asks for, and the total.
    pub fn page<T>(&self, mut items: Vec<T>) -> (u64, Vec<T>) {
        let total = items.len() as u64;
        if self.order == Order::Desc {
            items.reverse();
        }
        let skip = (self.page_number - 1).saturating_mul(self.limit);
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        let take = usize::try_from(self.limit).unwrap_or(usize::MAX);
        (total, items.into_iter().skip(skip).take(take).collect())
    }

    /// The answer's `meta`.
    pub fn meta(&self, total: u64) -> Value {
        let shown = self.page_number.saturating_mul(self.limit);
        let next = if shown >= total {
            json!({})
        } else {
            json!({
                "page_number": self.page_number + 1,
                "filters": self.filters,
                "order": self.order.as_str(),
                "limit": self.limit,
            })
        };
        json!({"total": total, "next_page_payload": next})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object literal"),
        }
    }

    fn any_filter(_: &str, _: &str) -> FilterVerdict {
        FilterVerdict::Accept
    }

    #[test]
    fn defaults_and_the_next_page_payload() {
        let mut errors = Vec::new();
        let q = parse(&Map::new(), any_filter, &mut errors);
        assert!(errors.is_empty());
        assert_eq!((q.page_number, q.limit, q.order), (1, 10, Order::Desc));
        let (total, page) = q.page((1..=25).collect::<Vec<u32>>());
        assert_eq!((total, page.first(), page.len()), (25, Some(&25), 10));
        assert_eq!(
            q.meta(25)["next_page_payload"],
            json!({"page_number": 2, "filters": {}, "order": "desc", "limit": 10})
        );
        let last = ListQuery {
            page_number: 3,
            ..q
        };
        assert_eq!(
            last.page((1..=25).collect::<Vec<u32>>()).1,
            vec![5, 4, 3, 2, 1]
        );
        assert_eq!(last.meta(25)["next_page_payload"], json!({}));
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let mut errors = Vec::new();
        let p = params(json!({"page_number": "0", "limit": "101", "order": "up",
                              "filters": {"x": "1", "y": ""}}));
        parse(&p, |_, _| FilterVerdict::Refuse("no".into()), &mut errors);
        let names: Vec<&str> = errors.iter().map(|e| e.parameter.as_str()).collect();
        assert_eq!(names, vec!["page_number", "limit", "order", "filters[x]"]);
    }
}
