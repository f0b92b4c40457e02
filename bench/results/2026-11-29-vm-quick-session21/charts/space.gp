set terminal pngcairo size 730,480 font "sans,10"
set output 'space.png'
set title "New space used by clone and copy-up (MiB, lower is better)" noenhanced
set datafile separator '\t'
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top noenhanced
set xtics noenhanced
set yrange [0:*]
plot for [i=2:6] 'space.dat' using i:xtic(1) title columnheader(i)
