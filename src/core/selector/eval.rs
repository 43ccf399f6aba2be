//! Evaluation with SQL's three-valued logic: a missing name is NULL, any
//! comparison or arithmetic with NULL is UNKNOWN (here `Null`), and only
//! TRUE matches. A string compared with a number (or used in arithmetic)
//! counts as that number when it parses as one, and as UNKNOWN otherwise; a
//! string compared with a boolean counts as it when it is `true` / `false`.

use std::cmp::Ordering;

use super::ast::{BinaryOp, Expr};
use crate::core::content::{ContentValue, MessageView};

type Value<'a> = ContentValue<'a>;

pub(crate) fn matches(expr: &Expr, view: &MessageView<'_>) -> bool {
    truth(&eval(expr, view)) == Some(true)
}

/// TRUE, FALSE or UNKNOWN (None).
fn truth(value: &Value<'_>) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Str(s) => parse_bool(s),
        _ => None,
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn number(value: &Value<'_>) -> Option<f64> {
    match value {
        Value::Number(n) => Some(*n),
        Value::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

fn from_truth(truth: Option<bool>) -> Value<'static> {
    truth.map_or(Value::Null, Value::Bool)
}

fn from_number(n: f64) -> Value<'static> {
    // Overflow and division by zero give UNKNOWN, not infinities.
    if n.is_finite() {
        Value::Number(n)
    } else {
        Value::Null
    }
}

fn eval<'v>(expr: &'v Expr, view: &'v MessageView<'_>) -> Value<'v> {
    match expr {
        Expr::Str(s) => Value::Str(std::borrow::Cow::Borrowed(s)),
        Expr::Number(n) => Value::Number(*n),
        Expr::Bool(b) => Value::Bool(*b),
        Expr::Field(field) => view.get(field),
        Expr::Not(inner) => from_truth(truth(&eval(inner, view)).map(|b| !b)),
        Expr::Negate(inner) => match number(&eval(inner, view)) {
            Some(n) => from_number(-n),
            None => Value::Null,
        },
        Expr::Binary(BinaryOp::And, left, right) => {
            let left = truth(&eval(left, view));
            if left == Some(false) {
                return Value::Bool(false);
            }
            match (left, truth(&eval(right, view))) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        Expr::Binary(BinaryOp::Or, left, right) => {
            let left = truth(&eval(left, view));
            if left == Some(true) {
                return Value::Bool(true);
            }
            match (left, truth(&eval(right, view))) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        Expr::Binary(
            op @ (BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div),
            left,
            right,
        ) => {
            let (Some(a), Some(b)) = (number(&eval(left, view)), number(&eval(right, view))) else {
                return Value::Null;
            };
            from_number(match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                _ => a / b,
            })
        }
        Expr::Binary(op, left, right) => {
            from_truth(compare(*op, &eval(left, view), &eval(right, view)))
        }
        Expr::Between {
            negated,
            value,
            low,
            high,
        } => {
            let value = eval(value, view);
            let above = compare(BinaryOp::Ge, &value, &eval(low, view));
            let below = compare(BinaryOp::Le, &value, &eval(high, view));
            let within = match (above, below) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            from_truth(within.map(|b| b != *negated))
        }
        Expr::In {
            negated,
            value,
            list,
        } => {
            let value = eval(value, view);
            let mut found = Some(false);
            for item in list {
                match compare(BinaryOp::Eq, &value, &eval(item, view)) {
                    Some(true) => {
                        found = Some(true);
                        break;
                    }
                    Some(false) => {}
                    None => found = None,
                }
            }
            from_truth(found.map(|b| b != *negated))
        }
        Expr::Like {
            negated,
            value,
            pattern,
        } => match eval(value, view) {
            Value::Str(text) => Value::Bool(pattern.matches(&text) != *negated),
            _ => Value::Null,
        },
        Expr::IsNull { negated, value } => {
            Value::Bool(matches!(eval(value, view), Value::Null) != *negated)
        }
    }
}

/// One comparison; None is UNKNOWN.
fn compare(op: BinaryOp, left: &Value<'_>, right: &Value<'_>) -> Option<bool> {
    let ordering = match (left, right) {
        (Value::Null, _) | (_, Value::Null) => return None,
        (Value::Str(a), Value::Str(b)) => a.as_ref().cmp(b.as_ref()),
        (Value::Bool(_), _) | (_, Value::Bool(_)) => {
            let (a, b) = (truth(left)?, truth(right)?);
            return match op {
                BinaryOp::Eq => Some(a == b),
                BinaryOp::Ne => Some(a != b),
                // Booleans have no order.
                _ => None,
            };
        }
        _ => number(left)?.partial_cmp(&number(right)?)?,
    };
    Some(match op {
        BinaryOp::Eq => ordering == Ordering::Equal,
        BinaryOp::Ne => ordering != Ordering::Equal,
        BinaryOp::Lt => ordering == Ordering::Less,
        BinaryOp::Le => ordering != Ordering::Greater,
        BinaryOp::Gt => ordering == Ordering::Greater,
        BinaryOp::Ge => ordering != Ordering::Less,
        _ => return None,
    })
}
