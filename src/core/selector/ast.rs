//! The compiled form of a selector: a tree of expressions over content
//! fields. `Display` prints it fully parenthesised, which parses back to the
//! same tree.

use std::fmt;

use super::lexer::is_bare_name;
use crate::core::content::Field;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Number(f64),
    Bool(bool),
    Field(Field),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Between {
        negated: bool,
        value: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
    },
    In {
        negated: bool,
        value: Box<Expr>,
        list: Vec<Expr>,
    },
    Like {
        negated: bool,
        value: Box<Expr>,
        pattern: LikePattern,
    },
    IsNull {
        negated: bool,
        value: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::Ne => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
        }
    }
}

/// One element of a LIKE pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LikePart {
    Char(char),
    /// `_`: exactly one character.
    One,
    /// `%`: any run of characters, empty included.
    Any,
}

/// A LIKE pattern as written (kept for printing) and compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikePattern {
    pub source: String,
    pub escape: Option<char>,
    pub parts: Vec<LikePart>,
}

impl LikePattern {
    /// Compiles `source`; Err names the byte offset in `source` of a bad escape.
    pub fn new(source: String, escape: Option<char>) -> Result<LikePattern, usize> {
        let mut parts = Vec::new();
        let mut chars = source.char_indices();
        while let Some((at, c)) = chars.next() {
            if Some(c) == escape {
                match chars.next() {
                    Some((_, next)) if next == '%' || next == '_' || Some(next) == escape => {
                        parts.push(LikePart::Char(next))
                    }
                    _ => return Err(at),
                }
            } else {
                parts.push(match c {
                    '%' => LikePart::Any,
                    '_' => LikePart::One,
                    other => LikePart::Char(other),
                });
            }
        }
        Ok(LikePattern {
            source,
            escape,
            parts,
        })
    }

    /// True when `text` matches: greedy with one backtrack point per `%`
    /// (linear in practice, never exponential).
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let parts = &self.parts;
        let (mut t, mut p) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        while t < text.len() {
            match parts.get(p) {
                Some(LikePart::Any) => {
                    backtrack = Some((p, t));
                    p += 1;
                }
                Some(LikePart::One) => {
                    t += 1;
                    p += 1;
                }
                Some(LikePart::Char(c)) if *c == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match backtrack {
                    Some((bp, bt)) => {
                        p = bp + 1;
                        t = bt + 1;
                        backtrack = Some((bp, bt + 1));
                    }
                    None => return false,
                },
            }
        }
        parts[p..].iter().all(|part| *part == LikePart::Any)
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, quote: char, text: &str) -> fmt::Result {
    write!(f, "{quote}")?;
    for c in text.chars() {
        if c == quote {
            write!(f, "{quote}")?;
        }
        write!(f, "{c}")?;
    }
    write!(f, "{quote}")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |negated: bool| if negated { "NOT " } else { "" };
        match self {
            Expr::Str(text) => write_quoted(f, '\'', text),
            Expr::Number(n) => write!(f, "{n}"),
            Expr::Bool(b) => write!(f, "{}", if *b { "TRUE" } else { "FALSE" }),
            Expr::Field(field) => match field.canonical_name() {
                Some(name) => write!(f, "{name}"),
                None => match field {
                    // A bare property name that would read as a reserved one is quoted.
                    Field::Property(name)
                        if is_bare_name(name)
                            && matches!(Field::from_name(name), Some(Field::Property(_))) =>
                    {
                        write!(f, "{name}")
                    }
                    Field::Property(name) => write_quoted(f, '"', name),
                    _ => Ok(()),
                },
            },
            Expr::Not(inner) => write!(f, "(NOT {inner})"),
            Expr::Negate(inner) => write!(f, "(-{inner})"),
            Expr::Binary(op, left, right) => write!(f, "({left} {} {right})", op.symbol()),
            Expr::Between {
                negated,
                value,
                low,
                high,
            } => write!(f, "({value} {}BETWEEN {low} AND {high})", not(*negated)),
            Expr::In {
                negated,
                value,
                list,
            } => {
                write!(f, "({value} {}IN (", not(*negated))?;
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "))")
            }
            Expr::Like {
                negated,
                value,
                pattern,
            } => {
                write!(f, "({value} {}LIKE ", not(*negated))?;
                write_quoted(f, '\'', &pattern.source)?;
                if let Some(escape) = pattern.escape {
                    write!(f, " ESCAPE ")?;
                    write_quoted(f, '\'', &escape.to_string())?;
                }
                write!(f, ")")
            }
            Expr::IsNull { negated, value } => write!(f, "({value} IS {}NULL)", not(*negated)),
        }
    }
}
