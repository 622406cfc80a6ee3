# Reference values for tests/test_small_sample.py: CR2 / CR3 covariances and Satterthwaite
# degrees of freedom from R clubSandwich (Pustejovsky), for lm, weighted lm and AER::ivreg.
#
# Run from the repository root:   Rscript tests/reference/make_clubsandwich.R
# Writes tests/reference/cs_{two_arm,three_arm,iv}.csv and tests/reference/clubsandwich.json.
# The data are simulated here with a fixed seed, rounded, written to CSV and READ BACK, so
# that R and the Python tests fit exactly the same numbers.
#
# Conventions stored in the JSON (Python builds the same designs from the CSVs):
#  * regressors [1, A, Xc, A x Xc] (R's coefficient order of y ~ arm * (x1c + x2c));
#    covariates centred at their mean (weighted mean when the case has weights);
#  * "cr2" / "cr3": the joint (pK x pK) covariance of all coefficients of all K outcomes,
#    index r * K + k (coefficient-major). For lm / weighted lm it is vcovCR of the
#    multivariate lm (cbind(y1, y2) ~ ...), permuted; for ivreg (no multivariate fit) it is
#    the Gram matrix of the per-cluster adjusted contributions vcovCR(form = "estfun");
#    both constructions are checked against each other for lm below.
#  * "cr3" is clubSandwich's CR3 as it comes, without the factor (G - 1) / G;
#  * "coef_df": coef_test(..., vcov = "CR2", test = "Satterthwaite")$df_Satt;
#  * contrasts: SEs from C V C' and dof from Wald_test(..., test = "HTZ") with one
#    constraint (for q = 1 the HTZ denominator df is the Satterthwaite df; checked against
#    linear_contrast for unweighted lm, where linear_contrast works: in clubSandwich 0.5.8
#    linear_contrast(test = "Satterthwaite") fails for weighted lm and ivreg).
suppressPackageStartupMessages({
  library(clubSandwich)
  library(AER)
  library(jsonlite)
})
RNGkind("Mersenne-Twister", "Inversion", "Rejection")
set.seed(20240607)
out_dir <- "tests/reference"
r4 <- function(x) round(x, 4)

write_read <- function(df, name) {
  path <- file.path(out_dir, name)
  write.csv(df, path, row.names = FALSE)
  read.csv(path)
}

# --- data -----------------------------------------------------------------------------
# two arms, assignment by cluster, 12 clusters of unequal size, two covariates, two metrics
sizes <- c(3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16)
G <- length(sizes); cl <- rep(seq_len(G), sizes); n <- length(cl)
u <- rnorm(G); a_g <- sample(rep(0:1, G / 2))
a <- a_g[cl]; x1 <- rnorm(n) + 0.5 * u[cl]; x2 <- rbinom(n, 1, 0.4)
y1 <- 1 + 0.5 * a + 0.8 * x1 - 0.3 * x2 + 0.4 * a * x1 + u[cl] + rnorm(n) * (1 + a)
y2 <- -0.5 + 0.2 * a + 0.3 * x2 + 0.5 * u[cl] + rexp(n)
w <- runif(n, 0.5, 2.5)
two_arm <- write_read(data.frame(cluster = cl - 1, a = a, x1 = r4(x1), x2 = x2, y1 = r4(y1),
                                 y2 = r4(y2), w = r4(w)), "cs_two_arm.csv")

# three arms, assignment by row with probabilities (1/2, 1/4, 1/4), weights 1/P(arm)
sizes <- c(5, 7, 8, 10, 11, 13, 15, 17, 20)
G <- length(sizes); cl <- rep(seq_len(G), sizes); n <- length(cl)
u <- rnorm(G); arm <- sample(0:2, n, replace = TRUE, prob = c(0.5, 0.25, 0.25))
x <- rnorm(n)
y1 <- 2 + 0.4 * (arm == 1) - 0.3 * (arm == 2) + 0.6 * x + 0.3 * (arm == 2) * x + u[cl] + rnorm(n)
y2 <- 0.1 * arm + u[cl] * x + rnorm(n)
three_arm <- write_read(data.frame(cluster = cl - 1, arm = arm, x = r4(x), y1 = r4(y1),
                                   y2 = r4(y2), w = c(2, 4, 4)[arm + 1]), "cs_three_arm.csv")

# encouragement design: assignment a by cluster, two-sided non-compliance d, cluster weights
sizes <- c(3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17, 19)
G <- length(sizes); cl <- rep(seq_len(G), sizes); n <- length(cl)
u <- rnorm(G); a_g <- sample(rep(0:1, G / 2))
a <- a_g[cl]; x <- rnorm(n) + 0.3 * u[cl]
d <- as.numeric(ifelse(a == 1, runif(n) < 0.7, runif(n) < 0.15))
y1 <- 1 + 1.0 * d + 0.5 * x + 0.3 * d * x + u[cl] + rnorm(n)
y2 <- 0.5 * d + 0.5 * u[cl] + rnorm(n) * (1 + 0.5 * abs(x))
iv <- write_read(data.frame(cluster = cl - 1, a = a, d = d, x = r4(x), y1 = r4(y1), y2 = r4(y2),
                            w = r4(runif(G, 0.5, 2))[cl]), "cs_iv.csv")

# --- helpers --------------------------------------------------------------------------
centre <- function(x, w = NULL) if (is.null(w)) x - mean(x) else x - weighted.mean(x, w)

# estfun-based joint covariance, index r * K + k (both 0-based)
joint_from_estfun <- function(fits, cluster, type) {
  est <- lapply(fits, function(f) vcovCR(f, cluster = cluster, type = type, form = "estfun"))
  p <- nrow(est[[1]]); K <- length(est)
  stacked <- do.call(rbind, lapply(seq_len(p), function(r) do.call(rbind, lapply(est, function(e) e[r, ]))))
  tcrossprod(stacked)       # rows ordered (r, k) with k fastest
}

# (Kp x Kp) metric-major (mlm) -> coefficient-major
to_coef_major <- function(V, p, K) {
  idx <- as.vector(t(matrix(seq_len(p * K), p, K)))   # position r*K+k <- k*p+r
  V[idx, idx]
}

case_result <- function(fits, mlm, cluster, contrasts, data_name, model, weights, outcomes) {
  p <- length(coef(fits[[1]])); K <- length(fits)
  cr2 <- joint_from_estfun(fits, cluster, "CR2")
  cr3 <- joint_from_estfun(fits, cluster, "CR3")
  if (!is.null(mlm)) {   # the two constructions agree (lm only: no multivariate ivreg)
    stopifnot(isTRUE(all.equal(cr2, to_coef_major(as.matrix(vcovCR(mlm, cluster = cluster, type = "CR2")), p, K),
                               tolerance = 1e-10, check.attributes = FALSE)))
    stopifnot(isTRUE(all.equal(cr3, to_coef_major(as.matrix(vcovCR(mlm, cluster = cluster, type = "CR3")), p, K),
                               tolerance = 1e-10, check.attributes = FALSE)))
  }
  ct <- lapply(fits, function(f) coef_test(f, vcov = "CR2", cluster = cluster, test = "Satterthwaite"))
  for (k in seq_len(K)) {  # the per-outcome covariances are the diagonal blocks of the joint one
    V <- as.matrix(vcovCR(fits[[k]], cluster = cluster, type = "CR2"))
    stopifnot(isTRUE(all.equal(V, cr2[seq(k, p * K, K), seq(k, p * K, K)], tolerance = 1e-10,
                               check.attributes = FALSE)))
  }
  m <- nrow(contrasts)
  c_se2 <- c_se3 <- matrix(NA, m, K); c_df <- numeric(m)
  for (k in seq_len(K)) {
    V2 <- vcovCR(fits[[k]], cluster = cluster, type = "CR2")
    V3 <- as.matrix(vcovCR(fits[[k]], cluster = cluster, type = "CR3"))
    c_se2[, k] <- sqrt(diag(contrasts %*% as.matrix(V2) %*% t(contrasts)))
    c_se3[, k] <- sqrt(diag(contrasts %*% V3 %*% t(contrasts)))
    for (r in seq_len(m)) {
      wt <- Wald_test(fits[[k]], constraints = contrasts[r, , drop = FALSE], vcov = V2, test = "HTZ")
      if (k == 1) c_df[r] <- wt$df_denom else stopifnot(abs(wt$df_denom / c_df[r] - 1) < 1e-10)
    }
    if (is.null(weights) && model == "ols") {
      lc <- linear_contrast(fits[[k]], vcov = V2, contrasts = contrasts, test = "Satterthwaite")
      stopifnot(isTRUE(all.equal(lc$df, c_df, tolerance = 1e-10)),
                isTRUE(all.equal(lc$SE, c_se2[, k], tolerance = 1e-10)))
    }
  }
  list(data = data_name, model = model, weights = weights, outcomes = outcomes,
       n_clusters = nlevels(factor(cluster)), regressors = names(coef(fits[[1]])),
       coef = sapply(fits, coef), cr2 = cr2, cr3 = cr3,
       coef_se = sapply(ct, function(t) t$SE), coef_df = ct[[1]]$df_Satt,
       contrasts = contrasts, contrast_cr2_se = c_se2, contrast_cr2_df = c_df,
       contrast_cr3_se = c_se3)
}

cases <- list()

# --- two arms: OLS and WLS ------------------------------------------------------------
for (wname in list(NULL, "w")) {
  d <- two_arm
  wv <- if (is.null(wname)) NULL else d[[wname]]
  d$x1c <- centre(d$x1, wv); d$x2c <- centre(d$x2, wv); d$wt <- if (is.null(wv)) 1 else wv
  fml <- ~ a * (x1c + x2c)
  fits <- lapply(c("y1", "y2"), function(y) {
    f <- update(fml, paste(y, "~ ."))
    if (is.null(wv)) lm(f, data = d) else lm(f, data = d, weights = wt)
  })
  mlm <- if (is.null(wv)) lm(cbind(y1, y2) ~ a * (x1c + x2c), data = d) else
    lm(cbind(y1, y2) ~ a * (x1c + x2c), data = d, weights = wt)
  S <- d$x2 == 1
  C <- rbind(c(0, 1, 0, 0, 0, 0),
             c(0, 1, 0, 0, mean(d$x1c[S]), mean(d$x2c[S])),
             c(1, 0, 0, 0, 0, 0))
  name <- if (is.null(wv)) "two_arm_ols" else "two_arm_wls"
  cases[[name]] <- case_result(fits, mlm, d$cluster, C, "cs_two_arm.csv", "ols", wname, c("y1", "y2"))
}

# --- three arms: OLS and WLS ----------------------------------------------------------
for (wname in list(NULL, "w")) {
  d <- three_arm
  wv <- if (is.null(wname)) NULL else d[[wname]]
  d$xc <- centre(d$x, wv); d$arm <- factor(d$arm); d$wt <- if (is.null(wv)) 1 else wv
  fits <- lapply(c("y1", "y2"), function(y) {
    f <- as.formula(paste(y, "~ arm * xc"))
    if (is.null(wv)) lm(f, data = d) else lm(f, data = d, weights = wt)
  })
  mlm <- if (is.null(wv)) lm(cbind(y1, y2) ~ arm * xc, data = d) else
    lm(cbind(y1, y2) ~ arm * xc, data = d, weights = wt)
  S <- d$x > 0
  C <- rbind(c(0, 1, 0, 0, 0, 0), c(0, 0, 1, 0, 0, 0), c(0, -1, 1, 0, 0, 0),
             c(0, 1, 0, 0, mean(d$xc[S]), 0))
  name <- if (is.null(wv)) "three_arm_ols" else "three_arm_wls"
  cases[[name]] <- case_result(fits, mlm, d$cluster, C, "cs_three_arm.csv", "ols", wname, c("y1", "y2"))
}

# --- 2SLS: AER::ivreg, unweighted and with cluster-level weights ----------------------
for (wname in list(NULL, "w")) {
  d <- iv
  wv <- if (is.null(wname)) NULL else d[[wname]]
  d$xc <- centre(d$x, wv); d$wt <- if (is.null(wv)) 1 else wv
  fits <- lapply(c("y1", "y2"), function(y) {
    f <- as.formula(paste(y, "~ d * xc | a * xc"))
    if (is.null(wv)) ivreg(f, data = d) else ivreg(f, data = d, weights = wt)
  })
  S <- d$x > median(d$x)
  C <- rbind(c(0, 1, 0, 0), c(0, 1, 0, mean(d$xc[S])))
  name <- if (is.null(wv)) "iv" else "iv_wls"
  cases[[name]] <- case_result(fits, NULL, d$cluster, C, "cs_iv.csv", "iv", wname, c("y1", "y2"))
}

meta <- list(R = R.version.string, clubSandwich = as.character(packageVersion("clubSandwich")),
             AER = as.character(packageVersion("AER")), seed = 20240607,
             script = "tests/reference/make_clubsandwich.R")
writeLines(toJSON(list(meta = meta, cases = cases), digits = I(13), auto_unbox = TRUE,
                  matrix = "rowmajor", null = "null", pretty = FALSE),
           file.path(out_dir, "clubsandwich.json"))
cat("wrote", file.path(out_dir, "clubsandwich.json"), "\n")
