"""The languages the explorer speaks; domain text (presets, styles) is given in each."""

EN = "en"
ZH = "zh-CN"
LANGS = (EN, ZH)
