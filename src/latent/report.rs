//! The classification report in scikit-learn's `classification_report` layout (two decimals),
//! the same numbers as JSON, and the confusion matrix.

use serde::Serialize;

/// Precision, recall, F1 and support of one class or average.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ClassScores {
    /// TP / (TP + FP), 0 when nothing was predicted (scikit-learn's `zero_division` default).
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// Harmonic mean of the two (0 when both are 0).
    pub f1: f64,
    /// True instances.
    pub support: usize,
}

/// Everything `classification_report` shows.
#[derive(Debug, Clone, Serialize)]
pub struct ClassificationReport {
    /// Class names, in label order.
    pub classes: Vec<String>,
    /// Scores per class.
    pub per_class: Vec<ClassScores>,
    /// Fraction predicted correctly.
    pub accuracy: f64,
    /// Unweighted mean over classes.
    pub macro_avg: ClassScores,
    /// Mean weighted by support.
    pub weighted_avg: ClassScores,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Scores `predicted` against `truth` for `classes` labelled 0..n.
pub fn classification_report(
    truth: &[u8],
    predicted: &[u8],
    classes: &[String],
) -> ClassificationReport {
    let k = classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t as usize][p as usize] += 1;
    }
    let per_class: Vec<ClassScores> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted_c: usize = (0..k).map(|r| confusion[r][c]).sum();
            let precision = ratio(tp, predicted_c);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassScores {
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let total: usize = per_class.iter().map(|s| s.support).sum();
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let avg = |w: &dyn Fn(&ClassScores) -> f64| -> ClassScores {
        let ws: f64 = per_class.iter().map(w).sum();
        let m = |f: fn(&ClassScores) -> f64| {
            per_class.iter().map(|s| w(s) * f(s)).sum::<f64>() / ws.max(f64::MIN_POSITIVE)
        };
        ClassScores {
            precision: m(|s| s.precision),
            recall: m(|s| s.recall),
            f1: m(|s| s.f1),
            support: total,
        }
    };
    ClassificationReport {
        classes: classes.to_vec(),
        macro_avg: avg(&|_| 1.0),
        weighted_avg: avg(&|s| s.support as f64),
        accuracy: ratio(correct, total),
        per_class,
        confusion,
    }
}

impl ClassificationReport {
    /// The text scikit-learn prints (`digits=2`).
    pub fn to_sklearn_text(&self) -> String {
        let last = "weighted avg";
        let width = self
            .classes
            .iter()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
            .max(last.len());
        let mut s = format!("{:>width$} ", "");
        for h in ["precision", "recall", "f1-score", "support"] {
            s.push_str(&format!(" {h:>9}"));
        }
        s.push_str("\n\n");
        let row = |name: &str, c: &ClassScores| {
            format!(
                "{name:>width$}  {:>9.2} {:>9.2} {:>9.2} {:>9}\n",
                c.precision, c.recall, c.f1, c.support
            )
        };
        for (name, c) in self.classes.iter().zip(&self.per_class) {
            s.push_str(&row(name, c));
        }
        s.push('\n');
        s.push_str(&format!(
            "{:>width$}  {:>9} {:>9} {:>9.2} {:>9}\n",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        ));
        s.push_str(&row("macro avg", &self.macro_avg));
        s.push_str(&row(last, &self.weighted_avg));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference from scikit-learn 1.9.1:
    ///
    /// ```python
    /// from sklearn.metrics import classification_report
    /// y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
    /// y_pred = [0, 1, 0, 1, 1, 2, 0, 2, 1, 1]
    /// print(classification_report(y_true, y_pred))
    /// ```
    #[test]
    fn matches_scikit_learn_layout_and_numbers() {
        let t = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1];
        let p = [0, 1, 0, 1, 1, 2, 0, 2, 1, 1];
        let names: Vec<String> = (0..3).map(|i| i.to_string()).collect();
        let r = classification_report(&t, &p, &names);
        assert_eq!(r.to_sklearn_text(), SKLEARN);
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![0, 3, 0], vec![1, 1, 2]]
        );
    }

    const SKLEARN: &str = "              precision    recall  f1-score   support\n\n           0       0.67      0.67      0.67         3\n           1       0.60      1.00      0.75         3\n           2       1.00      0.50      0.67         4\n\n    accuracy                           0.70        10\n   macro avg       0.76      0.72      0.69        10\nweighted avg       0.78      0.70      0.69        10\n";
}
