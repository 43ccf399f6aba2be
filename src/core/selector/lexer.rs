//! Selector tokens. Names: a letter, `_` or `$`, then letters, digits, `_`,
//! `$`, `.`, and `-` when a name character follows it (so `x-kind` and
//! `content-type` are one name; write `a - b` with spaces to subtract).
//! A double-quoted name ("my header", "" for a quote) is always a property.

use super::SelectorError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
    /// A bare name (not a keyword).
    Name(String),
    /// A double-quoted name.
    QuotedName(String),
    Str(String),
    Number(f64),
    Keyword(Keyword),
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keyword {
    And,
    Or,
    Not,
    Between,
    In,
    Like,
    Escape,
    Is,
    Null,
    True,
    False,
}

impl Keyword {
    pub(crate) fn from_word(word: &str) -> Option<Keyword> {
        const WORDS: [(&str, Keyword); 11] = [
            ("AND", Keyword::And),
            ("OR", Keyword::Or),
            ("NOT", Keyword::Not),
            ("BETWEEN", Keyword::Between),
            ("IN", Keyword::In),
            ("LIKE", Keyword::Like),
            ("ESCAPE", Keyword::Escape),
            ("IS", Keyword::Is),
            ("NULL", Keyword::Null),
            ("TRUE", Keyword::True),
            ("FALSE", Keyword::False),
        ];
        WORDS
            .iter()
            .find(|(w, _)| w.eq_ignore_ascii_case(word))
            .map(|(_, k)| *k)
    }
}

impl Token {
    /// How an error message names the token.
    pub(crate) fn describe(&self) -> String {
        match self {
            Token::Name(name) => format!("name '{name}'"),
            Token::QuotedName(name) => format!("name \"{name}\""),
            Token::Str(_) => "a string".to_owned(),
            Token::Number(_) => "a number".to_owned(),
            Token::Keyword(k) => format!("{k:?}").to_ascii_uppercase(),
            Token::LParen => "'('".to_owned(),
            Token::RParen => "')'".to_owned(),
            Token::Comma => "','".to_owned(),
            Token::Eq => "'='".to_owned(),
            Token::Ne => "'<>'".to_owned(),
            Token::Lt => "'<'".to_owned(),
            Token::Le => "'<='".to_owned(),
            Token::Gt => "'>'".to_owned(),
            Token::Ge => "'>='".to_owned(),
            Token::Plus => "'+'".to_owned(),
            Token::Minus => "'-'".to_owned(),
            Token::Star => "'*'".to_owned(),
            Token::Slash => "'/'".to_owned(),
            Token::End => "the end".to_owned(),
        }
    }
}

pub(crate) fn is_name_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '$'
}

pub(crate) fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || c == '.'
}

/// True when `name` lexes back as one bare name that is not a keyword.
pub(crate) fn is_bare_name(name: &str) -> bool {
    let mut chars = name.chars().peekable();
    match chars.next() {
        Some(c) if is_name_start(c) => {}
        _ => return false,
    }
    while let Some(c) = chars.next() {
        let ok = is_name_char(c) || (c == '-' && chars.peek().is_some_and(|n| is_name_char(*n)));
        if !ok {
            return false;
        }
    }
    Keyword::from_word(name).is_none()
}

/// Splits `text` into tokens with their byte positions; the last is `End`.
pub(crate) fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, SelectorError> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut chars = text.char_indices().peekable();
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let token = if is_name_start(c) {
            let mut end = pos;
            while let Some(&(i, c)) = chars.peek() {
                let next_is_name = text[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_some_and(is_name_char);
                if is_name_char(c) || (c == '-' && next_is_name) {
                    end = i + c.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &text[pos..end];
            match Keyword::from_word(word) {
                Some(k) => Token::Keyword(k),
                None => Token::Name(word.to_owned()),
            }
        } else if c.is_ascii_digit()
            || (c == '.' && bytes.get(pos + 1).is_some_and(u8::is_ascii_digit))
        {
            let end = number_end(bytes, pos);
            let literal = &text[pos..end];
            let value: f64 = literal
                .parse()
                .map_err(|_| SelectorError::new(pos, "a number", format!("'{literal}'")))?;
            if !value.is_finite() {
                return Err(SelectorError::new(
                    pos,
                    "a number in range",
                    format!("'{literal}'"),
                ));
            }
            while chars.peek().is_some_and(|&(i, _)| i < end) {
                chars.next();
            }
            Token::Number(value)
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, q)) if q == c => {
                        if chars.peek().is_some_and(|&(_, n)| n == c) {
                            chars.next();
                            value.push(c);
                        } else {
                            break;
                        }
                    }
                    Some((_, other)) => value.push(other),
                    None => {
                        let what = if c == '\'' {
                            "the closing ' of the string"
                        } else {
                            "the closing \" of the name"
                        };
                        return Err(SelectorError::new(text.len(), what, "the end".to_owned()));
                    }
                }
            }
            if c == '\'' {
                Token::Str(value)
            } else if value.is_empty() {
                return Err(SelectorError::new(pos, "a name", "\"\"".to_owned()));
            } else {
                Token::QuotedName(value)
            }
        } else {
            chars.next();
            let next = chars.peek().map(|&(_, n)| n);
            let mut two = |token: Token| {
                chars.next();
                token
            };
            match (c, next) {
                ('<', Some('>')) => two(Token::Ne),
                ('<', Some('=')) => two(Token::Le),
                ('>', Some('=')) => two(Token::Ge),
                ('<', _) => Token::Lt,
                ('>', _) => Token::Gt,
                ('=', _) => Token::Eq,
                ('(', _) => Token::LParen,
                (')', _) => Token::RParen,
                (',', _) => Token::Comma,
                ('+', _) => Token::Plus,
                ('-', _) => Token::Minus,
                ('*', _) => Token::Star,
                ('/', _) => Token::Slash,
                _ => {
                    return Err(SelectorError::new(
                        pos,
                        "a name, a literal, an operator or a parenthesis",
                        format!("'{c}'"),
                    ))
                }
            }
        };
        tokens.push((pos, token));
    }
    tokens.push((text.len(), Token::End));
    Ok(tokens)
}

/// Where the number starting at `start` ends: digits, `.digits`, `e[+-]digits`.
fn number_end(bytes: &[u8], start: usize) -> usize {
    let digits = |mut i: usize| {
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut end = digits(start);
    if bytes.get(end) == Some(&b'.') {
        end = digits(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exp = end + 1;
        if matches!(bytes.get(exp), Some(b'+' | b'-')) {
            exp += 1;
        }
        if bytes.get(exp).is_some_and(u8::is_ascii_digit) {
            end = digits(exp);
        }
    }
    end
}
