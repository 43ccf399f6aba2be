//! A Pratt parser from tokens to the expression tree. Binding powers, lowest
//! first: OR, AND, NOT, comparisons (= <> < <= > >=, [NOT] BETWEEN / IN /
//! LIKE, IS [NOT] NULL), + -, * /, unary - +.

use super::ast::{BinaryOp, Expr, LikePattern};
use super::lexer::{tokenize, Keyword, Token};
use super::SelectorError;
use crate::core::content::Field;

/// Deepest tree accepted, so evaluating, printing and dropping a selector
/// never recurse far whatever a client sends.
pub(crate) const MAX_DEPTH: usize = 64;

const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const COMPARE: u8 = 4;
const ADD: u8 = 5;
const MUL: u8 = 6;
const UNARY: u8 = 7;

pub(crate) fn parse(text: &str) -> Result<Expr, SelectorError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser { tokens, next: 0 };
    let (expr, _) = parser.expr(0, 0)?;
    match parser.peek() {
        Token::End => Ok(expr),
        _ => Err(parser.expected("an operator, AND, OR or the end")),
    }
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
}

/// An expression and the depth of its tree.
type Parsed = (Expr, usize);

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.next).map_or(&Token::End, |(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.next).map_or(0, |(p, _)| *p)
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.next < self.tokens.len() {
            self.next += 1;
        }
        token
    }

    fn expected(&self, what: &str) -> SelectorError {
        SelectorError::new(self.position(), what, self.peek().describe())
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), SelectorError> {
        if *self.peek() == token {
            self.advance();
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn keyword(&mut self, keyword: Keyword) -> bool {
        if *self.peek() == Token::Keyword(keyword) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn check_depth(&self, depth: usize, at: usize) -> Result<usize, SelectorError> {
        if depth > MAX_DEPTH {
            return Err(SelectorError::new(
                at,
                &format!("an expression nested at most {MAX_DEPTH} deep"),
                "a deeper one".to_owned(),
            ));
        }
        Ok(depth)
    }

    /// Parses an expression whose operators bind tighter than `min`.
    fn expr(&mut self, min: u8, depth: usize) -> Result<Parsed, SelectorError> {
        let start = self.position();
        self.check_depth(depth, start)?;
        let (mut left, mut left_depth) = self.prefix(depth)?;
        loop {
            let at = self.position();
            let (op, power) = match self.peek() {
                Token::Keyword(Keyword::Or) => (Some(BinaryOp::Or), OR),
                Token::Keyword(Keyword::And) => (Some(BinaryOp::And), AND),
                Token::Eq => (Some(BinaryOp::Eq), COMPARE),
                Token::Ne => (Some(BinaryOp::Ne), COMPARE),
                Token::Lt => (Some(BinaryOp::Lt), COMPARE),
                Token::Le => (Some(BinaryOp::Le), COMPARE),
                Token::Gt => (Some(BinaryOp::Gt), COMPARE),
                Token::Ge => (Some(BinaryOp::Ge), COMPARE),
                Token::Plus => (Some(BinaryOp::Add), ADD),
                Token::Minus => (Some(BinaryOp::Sub), ADD),
                Token::Star => (Some(BinaryOp::Mul), MUL),
                Token::Slash => (Some(BinaryOp::Div), MUL),
                Token::Keyword(
                    Keyword::Not | Keyword::Between | Keyword::In | Keyword::Like | Keyword::Is,
                ) => (None, COMPARE),
                _ => break,
            };
            if power <= min {
                break;
            }
            let depth_here = self.check_depth(left_depth + 1, at)?;
            match op {
                Some(op) => {
                    self.advance();
                    let (right, right_depth) = self.expr(power, depth + 1)?;
                    left = Expr::Binary(op, Box::new(left), Box::new(right));
                    left_depth = self.check_depth(depth_here.max(right_depth + 1), at)?;
                }
                None => {
                    let (expr, sub_depth) = self.postfix(left, depth + 1)?;
                    left = expr;
                    left_depth = self.check_depth(depth_here.max(sub_depth + 1), at)?;
                }
            }
        }
        Ok((left, left_depth))
    }

    /// A name, a literal, a parenthesised expression, NOT or a sign.
    fn prefix(&mut self, depth: usize) -> Result<Parsed, SelectorError> {
        let at = self.position();
        let token = self.peek().clone();
        let leaf = match token {
            Token::Name(name) => match Field::from_name(&name) {
                Some(field) => Expr::Field(field),
                None => {
                    return Err(SelectorError::new(
                        at,
                        "a name such as payload.<field> or topic.<level number>",
                        format!("'{name}'"),
                    ))
                }
            },
            Token::QuotedName(name) => Expr::Field(Field::Property(name)),
            Token::Str(text) => Expr::Str(text),
            Token::Number(n) => Expr::Number(n),
            Token::Keyword(Keyword::True) => Expr::Bool(true),
            Token::Keyword(Keyword::False) => Expr::Bool(false),
            Token::LParen => {
                self.advance();
                let inner = self.expr(0, depth + 1)?;
                self.expect(Token::RParen, "')'")?;
                return Ok(inner);
            }
            Token::Keyword(Keyword::Not) => {
                self.advance();
                let (inner, d) = self.expr(NOT, depth + 1)?;
                return Ok((Expr::Not(Box::new(inner)), self.check_depth(d + 1, at)?));
            }
            Token::Minus => {
                self.advance();
                let (inner, d) = self.expr(UNARY, depth + 1)?;
                return Ok((Expr::Negate(Box::new(inner)), self.check_depth(d + 1, at)?));
            }
            // Unary plus changes nothing and leaves no node.
            Token::Plus => {
                self.advance();
                return self.expr(UNARY, depth + 1);
            }
            _ => return Err(self.expected("a name, a literal, '(', NOT or '-'")),
        };
        self.advance();
        Ok((leaf, 0))
    }

    /// [NOT] BETWEEN / IN / LIKE, IS [NOT] NULL after `value`.
    fn postfix(&mut self, value: Expr, depth: usize) -> Result<Parsed, SelectorError> {
        let value = Box::new(value);
        if self.keyword(Keyword::Is) {
            let negated = self.keyword(Keyword::Not);
            if !self.keyword(Keyword::Null) {
                return Err(self.expected(if negated { "NULL" } else { "NULL or NOT NULL" }));
            }
            return Ok((Expr::IsNull { negated, value }, 0));
        }
        let negated = self.keyword(Keyword::Not);
        if self.keyword(Keyword::Between) {
            let (low, low_depth) = self.expr(COMPARE, depth + 1)?;
            if !self.keyword(Keyword::And) {
                return Err(self.expected("AND (of BETWEEN)"));
            }
            let (high, high_depth) = self.expr(COMPARE, depth + 1)?;
            let expr = Expr::Between {
                negated,
                value,
                low: Box::new(low),
                high: Box::new(high),
            };
            return Ok((expr, low_depth.max(high_depth)));
        }
        if self.keyword(Keyword::In) {
            self.expect(Token::LParen, "'(' (of IN)")?;
            let mut list = Vec::new();
            let mut list_depth = 0;
            loop {
                let (item, d) = self.expr(COMPARE, depth + 1)?;
                list.push(item);
                list_depth = list_depth.max(d);
                match self.advance() {
                    Token::Comma => continue,
                    Token::RParen => break,
                    _ => {
                        self.next -= 1;
                        return Err(self.expected("',' or ')' (of IN)"));
                    }
                }
            }
            return Ok((
                Expr::In {
                    negated,
                    value,
                    list,
                },
                list_depth,
            ));
        }
        if self.keyword(Keyword::Like) {
            let pattern_at = self.position();
            let Token::Str(source) = self.peek().clone() else {
                return Err(self.expected("a string pattern (of LIKE)"));
            };
            self.advance();
            let mut escape = None;
            if self.keyword(Keyword::Escape) {
                let escape_at = self.position();
                let token = self.advance();
                let mut chars = match &token {
                    Token::Str(text) => text.chars(),
                    _ => {
                        self.next -= 1;
                        return Err(self.expected("a one-character string (of ESCAPE)"));
                    }
                };
                match (chars.next(), chars.next()) {
                    (Some(c), None) => escape = Some(c),
                    _ => {
                        return Err(SelectorError::new(
                            escape_at,
                            "a one-character string (of ESCAPE)",
                            token.describe(),
                        ))
                    }
                }
            }
            let pattern = LikePattern::new(source, escape).map_err(|_| {
                SelectorError::new(
                    pattern_at,
                    "the escape character only before %, _ or itself",
                    "a pattern that uses it otherwise".to_owned(),
                )
            })?;
            return Ok((
                Expr::Like {
                    negated,
                    value,
                    pattern,
                },
                0,
            ));
        }
        Err(self.expected(if negated {
            "BETWEEN, IN or LIKE after NOT"
        } else {
            "BETWEEN, IN, LIKE or IS"
        }))
    }
}
