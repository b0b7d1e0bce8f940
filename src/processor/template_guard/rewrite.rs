//! The rewriting of a chat template's source: minijinja's lexical rules for blocks and a
//! recursive-descent parser of its expression grammar (precedence from low to high: `if`/`else`,
//! `or`, `and`, `not`, comparisons and `in`, `+` `-`, `~`, `*` `/` `//` `%`, `**`, unary `-`,
//! postfix `.`/`[]`/`()`, filters and tests) that rebuilds each expression with its binary `+`, `*`
//! and `~` turned into calls of the bounded functions, and every other token as written.

use super::{ADD, CAT, MUL};

/// A chat template's source with every binary `+`, `*` and `~` replaced by a call of its bounded
/// function; `Err` names what the rewriter cannot follow (the template is then refused).
pub fn bound_source(src: &str) -> Result<String, String> {
    let mut out = String::with_capacity(src.len() + src.len() / 4);
    let mut rest = src;
    while !rest.is_empty() {
        let Some(start) = ["{{", "{%", "{#"].iter().filter_map(|d| rest.find(d)).min() else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        if rest.starts_with("{#") {
            let end = rest.find("#}").ok_or("a comment is not closed")? + 2;
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            continue;
        }
        let variable = rest.starts_with("{{");
        let mut open = 2;
        if matches!(rest.as_bytes().get(2), Some(b'-' | b'+')) {
            open = 3;
        }
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        if !variable {
            if let Some(len) = raw_block(rest) {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
        }
        let (tokens, close, used) = lex_block(rest, if variable { "}}" } else { "%}" })?;
        let mut p = Parser {
            t: &tokens,
            i: 0,
            depth: 0,
        };
        out.push(' ');
        out.push_str(&p.block(!variable)?);
        out.push(' ');
        out.push_str(close);
        rest = &rest[used..];
    }
    Ok(out)
}

/// If `s` (just after `{%`) opens a raw block, the length up to the end of its `endraw` tag.
fn raw_block(s: &str) -> Option<usize> {
    let tag = |s: &str, name: &str| -> Option<usize> {
        let t = s.trim_start();
        let t = t.strip_prefix(name)?;
        let t2 = t.trim_start();
        let t3 = t2.strip_prefix(['-', '+']).unwrap_or(t2);
        let t4 = t3.strip_prefix("%}")?;
        Some(s.len() - t4.len())
    };
    let mut pos = tag(s, "raw")?;
    loop {
        let next = s[pos..].find("{%")? + pos + 2;
        let after = if matches!(s.as_bytes().get(next), Some(b'-' | b'+')) {
            next + 1
        } else {
            next
        };
        if let Some(len) = tag(&s[after..], "endraw") {
            return Some(after + len);
        }
        pos = next;
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    /// An identifier or keyword.
    Name(&'a str),
    /// A string or number literal, kept as written.
    Lit(&'a str),
    /// An operator or punctuation.
    Op(&'a str),
}

/// Splits a block's inside into tokens, up to its end (`}}` or `%}`, with an optional `-` or `+`
/// before it, outside brackets, as minijinja's lexer finds it). Returns the tokens, the end marker
/// as written, and the bytes consumed.
fn lex_block<'a>(s: &'a str, end: &str) -> Result<(Vec<Tok<'a>>, &'a str, usize), String> {
    let b = s.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut depth = 0i64;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return Err("a block is not closed".into());
        }
        if depth == 0 {
            let ws = usize::from(matches!(b[i], b'-' | b'+'));
            if s[i + ws..].starts_with(end) {
                let len = ws + end.len();
                return Ok((tokens, &s[i..i + len], i + len));
            }
        }
        let c = b[i];
        let start = i;
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            if i >= b.len() {
                return Err("a string is not closed".into());
            }
            i += 1;
            tokens.push(Tok::Lit(&s[start..i]));
        } else if c.is_ascii_digit() {
            while i < b.len() {
                let d = b[i];
                let exp_sign = matches!(d, b'+' | b'-')
                    && matches!(b[i - 1], b'e' | b'E')
                    && !s[start..i].starts_with("0x");
                if d.is_ascii_alphanumeric()
                    || d == b'_'
                    || exp_sign
                    || (d == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
                {
                    i += 1;
                } else {
                    break;
                }
            }
            tokens.push(Tok::Lit(&s[start..i]));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            tokens.push(Tok::Name(&s[start..i]));
        } else {
            let two = s.get(i..i + 2).unwrap_or("");
            let len = if ["//", "**", "==", "!=", "<=", ">="].contains(&two) {
                2
            } else if "+-*/%~<>=|.,:()[]{}!".contains(c as char) {
                1
            } else {
                return Err(format!("unexpected character {:?}", c as char));
            };
            match c {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                _ => {}
            }
            i += len;
            tokens.push(Tok::Op(&s[start..i]));
        }
    }
}

/// A recursive-descent parser of minijinja's expression grammar that only rebuilds the text,
/// wrapping the growing operators.
struct Parser<'t, 'a> {
    t: &'t [Tok<'a>],
    i: usize,
    depth: usize,
}

type Res = Result<String, String>;

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<&Tok<'a>> {
        self.t.get(self.i)
    }

    fn is_op(&self, op: &str) -> bool {
        self.peek() == Some(&Tok::Op(op))
    }

    fn is_name(&self, name: &str) -> bool {
        self.peek() == Some(&Tok::Name(name))
    }

    fn text(&mut self) -> &'a str {
        let t = match self.t[self.i] {
            Tok::Name(s) | Tok::Lit(s) | Tok::Op(s) => s,
        };
        self.i += 1;
        t
    }

    fn expect_op(&mut self, op: &str) -> Res {
        if self.is_op(op) {
            Ok(self.text().to_string())
        } else {
            Err(format!("expected `{op}`"))
        }
    }

    /// A whole block: a statement's keyword and then expressions and the punctuation between
    /// them (`=`, `,`, keywords), or one expression.
    fn block(&mut self, statement: bool) -> Res {
        let mut out = Vec::new();
        if statement && matches!(self.peek(), Some(Tok::Name(_))) {
            out.push(self.text().to_string());
        }
        while let Some(t) = self.peek() {
            let starts_expr = match t {
                Tok::Name(_) | Tok::Lit(_) => true,
                Tok::Op(o) => matches!(*o, "(" | "[" | "{" | "-"),
            };
            if starts_expr {
                out.push(self.expr()?);
            } else {
                out.push(self.text().to_string());
            }
        }
        Ok(out.join(" "))
    }

    fn expr(&mut self) -> Res {
        self.depth += 1;
        if self.depth > 500 {
            return Err("expressions nest too deeply".into());
        }
        let mut e = self.or()?;
        while self.is_name("if") {
            self.i += 1;
            let cond = self.or()?;
            e = format!("{e} if {cond}");
            if self.is_name("else") {
                self.i += 1;
                let other = self.expr()?;
                e = format!("{e} else {other}");
            }
        }
        self.depth -= 1;
        Ok(e)
    }

    fn or(&mut self) -> Res {
        let mut e = self.and()?;
        while self.is_name("or") {
            self.i += 1;
            e = format!("{e} or {}", self.and()?);
        }
        Ok(e)
    }

    fn and(&mut self) -> Res {
        let mut e = self.not()?;
        while self.is_name("and") {
            self.i += 1;
            e = format!("{e} and {}", self.not()?);
        }
        Ok(e)
    }

    fn not(&mut self) -> Res {
        if self.is_name("not") {
            self.i += 1;
            return Ok(format!("not {}", self.not()?));
        }
        self.compare()
    }

    fn compare(&mut self) -> Res {
        let mut e = self.math1()?;
        loop {
            let op = match self.peek() {
                Some(Tok::Op(o @ ("==" | "!=" | "<" | ">" | "<=" | ">="))) => o.to_string(),
                Some(Tok::Name("in")) => "in".to_string(),
                Some(Tok::Name("not")) if self.t.get(self.i + 1) == Some(&Tok::Name("in")) => {
                    self.i += 1;
                    "not in".to_string()
                }
                _ => break,
            };
            self.i += 1;
            e = format!("{e} {op} {}", self.math1()?);
        }
        Ok(e)
    }

    fn math1(&mut self) -> Res {
        let mut e = self.concat()?;
        loop {
            if self.is_op("+") {
                self.i += 1;
                e = format!("{ADD}({e}, {})", self.concat()?);
            } else if self.is_op("-") {
                self.i += 1;
                e = format!("{e} - {}", self.concat()?);
            } else {
                return Ok(e);
            }
        }
    }

    fn concat(&mut self) -> Res {
        let mut e = self.math2()?;
        while self.is_op("~") {
            self.i += 1;
            e = format!("{CAT}({e}, {})", self.math2()?);
        }
        Ok(e)
    }

    fn math2(&mut self) -> Res {
        let mut e = self.pow()?;
        loop {
            match self.peek() {
                Some(Tok::Op("*")) => {
                    self.i += 1;
                    e = format!("{MUL}({e}, {})", self.pow()?);
                }
                Some(Tok::Op(o @ ("/" | "//" | "%"))) => {
                    let o = *o;
                    self.i += 1;
                    e = format!("{e} {o} {}", self.pow()?);
                }
                _ => return Ok(e),
            }
        }
    }

    fn pow(&mut self) -> Res {
        let mut e = self.unary()?;
        while self.is_op("**") {
            self.i += 1;
            e = format!("{e} ** {}", self.unary()?);
        }
        Ok(e)
    }

    fn unary(&mut self) -> Res {
        let e = self.unary_only()?;
        let e = self.postfix(e)?;
        self.filters(e)
    }

    fn unary_only(&mut self) -> Res {
        if self.is_op("-") {
            self.i += 1;
            let operand = self.unary_only()?;
            return Ok(format!("- {}", self.postfix(operand)?));
        }
        self.primary()
    }

    fn postfix(&mut self, mut e: String) -> Res {
        loop {
            if self.is_op(".") {
                self.i += 1;
                match self.peek() {
                    Some(Tok::Name(_) | Tok::Lit(_)) => e = format!("{e}.{}", self.text()),
                    _ => return Err("expected an attribute after `.`".into()),
                }
            } else if self.is_op("[") {
                self.i += 1;
                let mut inner = String::new();
                while !self.is_op("]") {
                    if self.peek().is_none() {
                        return Err("expected `]`".into());
                    }
                    if self.is_op(":") {
                        inner.push_str(" : ");
                        self.i += 1;
                    } else {
                        inner.push_str(&self.expr()?);
                    }
                }
                self.i += 1;
                e = format!("{e}[{inner}]");
            } else if self.is_op("(") {
                e = format!("{e}{}", self.args()?);
            } else {
                return Ok(e);
            }
        }
    }

    fn dotted_name(&mut self) -> Res {
        let mut name = match self.peek() {
            Some(Tok::Name(_)) => self.text().to_string(),
            _ => return Err("expected a filter or test name".into()),
        };
        while self.is_op(".") && matches!(self.t.get(self.i + 1), Some(Tok::Name(_))) {
            self.i += 1;
            name = format!("{name}.{}", self.text());
        }
        Ok(name)
    }

    fn filters(&mut self, mut e: String) -> Res {
        loop {
            if self.is_op("|") {
                self.i += 1;
                let name = self.dotted_name()?;
                let args = if self.is_op("(") {
                    self.args()?
                } else {
                    String::new()
                };
                e = format!("{e} | {name}{args}");
            } else if self.is_name("is") {
                self.i += 1;
                let not = if self.is_name("not") {
                    self.i += 1;
                    "not "
                } else {
                    ""
                };
                let name = self.dotted_name()?;
                let arg = if self.is_op("(") {
                    self.args()?
                } else {
                    let starts = match self.peek() {
                        Some(Tok::Name(n)) => !matches!(*n, "and" | "or" | "else" | "is"),
                        Some(Tok::Lit(_)) => true,
                        Some(Tok::Op(o)) => matches!(*o, "+" | "-" | "[" | "{"),
                        None => false,
                    };
                    if starts {
                        let a = self.unary_only()?;
                        format!(" {}", self.postfix(a)?)
                    } else {
                        String::new()
                    }
                };
                e = format!("{e} is {not}{name}{arg}");
            } else {
                return Ok(e);
            }
        }
    }

    /// A call's parenthesised arguments: positional, `name=value`, `*splat`, `**splat`.
    fn args(&mut self) -> Res {
        self.expect_op("(")?;
        let mut parts = Vec::new();
        while !self.is_op(")") {
            if self.peek().is_none() {
                return Err("expected `)`".into());
            }
            if self.is_op(",") {
                self.i += 1;
                parts.push(",".to_string());
                continue;
            }
            let mut arg = String::new();
            if self.is_op("**") || self.is_op("*") {
                arg.push_str(self.text());
            } else if matches!(self.peek(), Some(Tok::Name(_)))
                && self.t.get(self.i + 1) == Some(&Tok::Op("="))
            {
                arg.push_str(self.text());
                arg.push_str(self.text());
            }
            arg.push_str(&self.expr()?);
            parts.push(arg);
        }
        self.i += 1;
        Ok(format!("({})", parts.join(" ")))
    }

    fn primary(&mut self) -> Res {
        match self.peek() {
            Some(Tok::Name(_)) => Ok(self.text().to_string()),
            Some(Tok::Lit(_)) => {
                // Adjacent string literals are one string.
                let mut s = self.text().to_string();
                while matches!(self.peek(), Some(Tok::Lit(l)) if l.starts_with(['"', '\'']))
                    && s.starts_with(['"', '\''])
                {
                    s.push(' ');
                    s.push_str(self.text());
                }
                Ok(s)
            }
            Some(Tok::Op(o @ ("(" | "[" | "{"))) => {
                let (open, close) = match *o {
                    "(" => ("(", ")"),
                    "[" => ("[", "]"),
                    _ => ("{", "}"),
                };
                self.i += 1;
                let mut parts = Vec::new();
                while !self.is_op(close) {
                    if self.peek().is_none() {
                        return Err(format!("expected `{close}`"));
                    }
                    if self.is_op(",") || self.is_op(":") {
                        parts.push(self.text().to_string());
                    } else {
                        parts.push(self.expr()?);
                    }
                }
                self.i += 1;
                Ok(format!("{open}{}{close}", parts.join(" ")))
            }
            Some(t) => Err(format!("unexpected {t:?} in an expression")),
            None => Err("an expression ends early".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_become_calls_and_the_rest_is_kept() {
        let r = bound_source("a{{ x + y * z ~ w }}b{# c + d #}{% set n = m - 1 %}").unwrap();
        assert_eq!(
            r,
            "a{{ __bounded_add(x, __bounded_concat(__bounded_mul(y, z), w)) }}b{# c + d #}{% set n = m - 1 %}"
        );
        let r =
            bound_source("{% raw %}{{ a + b }}{% endraw %}{{- f(*a, k=1 + 2) | g(3) -}}").unwrap();
        assert_eq!(
            r,
            "{% raw %}{{ a + b }}{% endraw %}{{- f(*a , k=__bounded_add(1, 2)) | g(3) -}}"
        );
    }
}
