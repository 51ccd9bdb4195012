//! `--auto-procname` and `--procname*`: the titles processes show in `ps` and `top`.

/// Process titles, as uWSGI sets them (core/utils.c `uwsgi_set_processname`, `uwsgi_fork`).
#[derive(Debug, Clone, Default)]
pub struct Titles {
    /// `--auto-procname`: name every process.
    pub auto: bool,
    /// `--procname`: the master's title (and every worker's, with `--auto-procname`).
    pub procname: Option<String>,
    /// `--procname-master`.
    pub master: Option<String>,
    /// `--procname-prefix`, or `--procname-prefix-spaced` with its space.
    pub prefix: String,
    /// `--procname-append`.
    pub append: String,
}

impl Titles {
    /// The master's title, if it gets one: `--procname-master`, else `--procname`, else
    /// "headrace master" with `--auto-procname`.
    #[must_use]
    pub fn master(&self) -> Option<String> {
        let name = self
            .master
            .clone()
            .or_else(|| self.procname.clone())
            .or_else(|| self.auto.then(|| "headrace master".to_owned()))?;
        Some(self.dress(&name))
    }

    /// A child's title (`name` is e.g. "headrace worker 3" or "headrace http 1"): only with
    /// `--auto-procname`, where `--procname` wins over the name, as in uWSGI.
    #[must_use]
    pub fn child(&self, name: &str) -> Option<String> {
        if !self.auto {
            return None;
        }
        Some(self.dress(self.procname.as_deref().unwrap_or(name)))
    }

    fn dress(&self, name: &str) -> String {
        format!("{}{name}{}", self.prefix, self.append)
    }
}
